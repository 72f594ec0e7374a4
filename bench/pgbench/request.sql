\set u random(1, 100)
begin;
select auth.authenticate(token) is not null from bench_api_tokens where id = :u;
select count(*) from bench_todos;
commit;
