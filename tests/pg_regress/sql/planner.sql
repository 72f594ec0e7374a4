-- The claim helpers' planner support: a direct call becomes a once-per-execution InitPlan,
-- like (select auth.uid()), and stays correct wherever plans are cached or reused.
begin;
create table notes (id int primary key, user_id uuid not null default auth.uid(), body text);
-- 12 notes of user 1, 8 of user 2, 10 of user 0: every user's count differs.
insert into notes
select g, ('00000000-0000-4000-8000-00000000000' || case when g <= 12 then 1 when g <= 20 then 2 else 0 end)::uuid,
       'note ' || g
  from generate_series(1, 30) g;
alter table notes enable row level security;
create policy own on notes for all to authenticated using (user_id = auth.uid()) with check (user_id = auth.uid());
grant select, insert, update, delete on notes to authenticated;
select set_config('request.jwt.claims', '{"sub": "00000000-0000-4000-8000-000000000001", "role": "authenticated"}', true) is not null as claims_set;

-- The direct call in a policy and in WHERE: an InitPlan, not a per-row call.
set local role authenticated;
explain (costs off) select count(*) from notes;
explain (costs off) select * from notes where user_id = auth.uid();
select count(*) from notes;
reset role;
-- Nothing to gain with no relation: left as a plain call.
explain (costs off) select auth.uid();
-- With an index, the InitPlan value drives an index scan.
create index on notes (user_id);
set local enable_seqscan = off;
explain (costs off) select id from notes where user_id = auth.uid();
reset enable_seqscan;

-- A generic cached plan is re-executed under new claims: each execution sees its own.
set local plan_cache_mode = force_generic_plan;
prepare mine as select count(*) from notes where user_id = auth.uid();
execute mine;
select set_config('request.jwt.claims', '{"sub": "00000000-0000-4000-8000-000000000002"}', true) is not null as claims_set;
execute mine;
select set_config('request.jwt.claims', '', true) is not null as claims_cleared;
execute mine;
deallocate mine;
reset plan_cache_mode;

-- PL/pgSQL caches plans too.
create function my_count() returns bigint language plpgsql stable as $$
begin
  return (select count(*) from notes where user_id = auth.uid());
end $$;
select set_config('request.jwt.claims', '{"sub": "00000000-0000-4000-8000-000000000001"}', true) is not null as claims_set;
select my_count();
select set_config('request.jwt.claims', '{"sub": "00000000-0000-4000-8000-000000000000"}', true) is not null as claims_set;
select my_count();
create function my_uid() returns uuid language plpgsql stable as $$ begin return auth.uid(); end $$;
select my_uid();

-- An inlined SQL function that calls the helper.
create function current_owner() returns uuid language sql stable as $$ select auth.uid() $$;
select count(*) as via_inlined_sql_function from notes where user_id = current_owner();

-- Column defaults, CHECK constraints, UPDATE and DELETE through RLS.
alter table notes add constraint body_not_for_others check (body <> auth.uid()::text);
set local role authenticated;
insert into notes (id, body) values (100, 'mine by default');
select user_id = auth.uid() as default_is_caller from notes where id = 100;
with u as (update notes set body = body || '!' returning 1) select count(*) as updated from u;
with d as (delete from notes where id = 100 returning 1) select count(*) as deleted from d;
reset role;

-- The other helpers: text results keep their collation; jwt() works in expressions.
select set_config('request.jwt.claims', '{"sub": "00000000-0000-4000-8000-000000000001", "role": "authenticated", "email": "b@example.io", "tier": "gold"}', true) is not null as claims_set;
select count(*) as by_role from notes where auth.role() = 'authenticated' and auth.email() like 'b@%';
select count(*) as by_claim from notes where auth.jwt() ->> 'tier' = 'gold';
explain (costs off) select count(*) from notes where auth.jwt() ->> 'tier' = 'gold';

-- A partitioned table with the same policy.
create table events (id int, user_id uuid not null) partition by hash (id);
create table events_0 partition of events for values with (modulus 2, remainder 0);
create table events_1 partition of events for values with (modulus 2, remainder 1);
insert into events select g, ('00000000-0000-4000-8000-00000000000' || (g % 3))::uuid from generate_series(1, 30) g;
alter table events enable row level security;
create policy own on events to authenticated using (user_id = auth.uid());
grant select on events to authenticated;
set local role authenticated;
select count(*) as partitioned from events;
reset role;
rollback;
