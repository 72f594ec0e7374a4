-- Data for the pgbench workloads (run after bench.sql, in the same database).
\set ON_ERROR_STOP 1
-- 100 users with known passwords.
select count(auth.sign_up('pgb' || g || '@example.com', 'pgbench-password-' || g)) as users
  from generate_series(1, 100) g;
-- One refresh-token chain per pgbench client.
create table bench_chains (client int primary key, token text not null);
insert into bench_chains
select c, auth.sign_in('pgb' || (c % 100 + 1) || '@example.com', 'pgbench-password-' || (c % 100 + 1)) ->> 'refresh_token'
  from generate_series(0, 63) c;
create function bench_refresh(c int) returns void language sql as $$
  update bench_chains set token = auth.refresh(token) ->> 'refresh_token' where client = c
$$;
-- Access tokens of the 100 users and a table of theirs behind RLS.
create table bench_api_tokens (id int primary key, token text not null);
insert into bench_api_tokens
select g, auth.sign_in('pgb' || g || '@example.com', 'pgbench-password-' || g) ->> 'access_token'
  from generate_series(1, 100) g;
create table bench_todos (id bigint generated always as identity primary key, user_id uuid not null, task text not null);
insert into bench_todos (user_id, task)
select u.id, 'task ' || g from auth.users u, generate_series(1, 100) g where u.email like 'pgb%';
create index on bench_todos (user_id);
analyze bench_todos;
alter table bench_todos enable row level security;
create policy own on bench_todos to authenticated using (user_id = auth.uid());
grant select on bench_todos to authenticated;
