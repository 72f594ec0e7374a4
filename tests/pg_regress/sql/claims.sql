-- auth.uid(), auth.role(), auth.email(), auth.jwt() over PostgREST's settings.
begin;
-- Nothing set: all NULL.
select auth.uid(), auth.role(), auth.email(), auth.jwt();

select set_config('request.jwt.claims', '{"sub": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "role": "authenticated", "email": "a@example.io", "aal": "aal1"}', true);
select auth.uid(), auth.role(), auth.email(), auth.jwt() ->> 'aal' as aal;

-- A new value within the same transaction is seen at once.
select set_config('request.jwt.claims', '{"sub": "b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a22", "role": "anon"}', true);
select auth.uid(), auth.role(), auth.email();

-- The legacy per-claim settings win when non-empty; empty means absent.
select set_config('request.jwt.claim.sub', 'c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a33', true),
       set_config('request.jwt.claim.role', 'service_role', true),
       set_config('request.jwt.claim.email', 'legacy@example.io', true);
select auth.uid(), auth.role(), auth.email();
select set_config('request.jwt.claim.sub', '', true),
       set_config('request.jwt.claim.role', '', true),
       set_config('request.jwt.claim.email', '', true);
select auth.uid(), auth.role(), auth.email();
select set_config('request.jwt.claim', '{"legacy": true}', true);
select auth.jwt();
select set_config('request.jwt.claim', '', true);

-- Fail closed: malformed JSON, a non-object, a sub that is not a uuid.
select set_config('request.jwt.claims', 'not json', true);
select auth.uid(), auth.role(), auth.jwt();
select set_config('request.jwt.claims', '[1, 2]', true);
select auth.uid(), auth.jwt();
select set_config('request.jwt.claims', '{"sub": "not-a-uuid", "role": 5, "email": null}', true);
select auth.uid(), auth.role(), auth.email();
select set_config('request.jwt.claims', '{"sub": "{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}"}', true);
select auth.uid() as braces_and_case;
select set_config('request.jwt.claims', '', true);
select auth.uid(), auth.jwt();

-- A rolled-back subtransaction restores the old value, and the helpers follow it.
select set_config('request.jwt.claims', '{"sub": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}', true);
savepoint s1;
select set_config('request.jwt.claims', '{"sub": "b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a22"}', true);
select auth.uid() as inside_savepoint;
rollback to savepoint s1;
select auth.uid() as after_rollback_to_savepoint;

-- SET LOCAL and RESET work the same way.
set local request.jwt.claims = '{"sub": "c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a33"}';
select auth.uid() as after_set_local;
reset request.jwt.claims;
select auth.uid() as after_reset;

-- Every role can call them (they are what RLS policies use).
set local role anon;
select set_config('request.jwt.claims', '{"sub": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "role": "anon"}', true);
select current_user, auth.uid(), auth.role();
reset role;
commit;

-- After the transaction the local setting reads as '' and the helpers give NULL.
select auth.uid() as after_commit, auth.jwt() as jwt_after_commit;

-- Their declared properties: stable and parallel safe.
select proname, provolatile, proparallel, prosecdef
  from pg_proc where pronamespace = 'auth'::regnamespace and proname in ('uid', 'role', 'email', 'jwt')
 order by proname;

-- A new transaction with a new value: seen at once (the cache compares the value itself).
begin;
select set_config('request.jwt.claims', '{"sub": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}', true) is not null as claims_set;
select auth.uid() as first_transaction;
commit;
begin;
select set_config('request.jwt.claims', '{"sub": "b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a22"}', true) is not null as claims_set;
select auth.uid() as second_transaction;
commit;
-- A session-level value outlives transactions until changed.
set request.jwt.claims = '{"sub": "c0eebc99-9c0b-4ef8-bb6d-6bb9bd380a33", "role": "authenticated"}';
select auth.uid() as session_level;
begin;
select auth.uid() as still_session_level;
set local request.jwt.claims = '{"sub": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}';
select auth.uid() as local_override;
commit;
select auth.uid() as back_to_session_level;
reset request.jwt.claims;

-- SET ROLE changes between requests: each request's claims, whatever the role switches.
begin;
set local role authenticated;
select set_config('request.jwt.claims', '{"sub": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "role": "authenticated"}', true) is not null as claims_set;
select current_user, auth.uid(), auth.role();
reset role;
set local role anon;
select set_config('request.jwt.claims', '{"role": "anon"}', true) is not null as claims_set;
select current_user, auth.uid(), auth.role();
reset role;
set local role service_role;
select current_user, auth.uid(), auth.role();
commit;

-- Parallel workers read the leader's claims.
begin;
create table parallel_items as
select g as id, ('00000000-0000-4000-8000-00000000000' || (g % 4))::uuid as user_id
  from generate_series(1, 20000) g;
analyze parallel_items;
set local parallel_setup_cost = 0;
set local parallel_tuple_cost = 0;
set local min_parallel_table_scan_size = 0;
set local max_parallel_workers_per_gather = 2;
select set_config('request.jwt.claims', '{"sub": "00000000-0000-4000-8000-000000000003"}', true) is not null as claims_set;
select count(*) as parallel_count from parallel_items where user_id = auth.uid();
select count(*) filter (where user_id = auth.uid()) as parallel_filter from parallel_items;
rollback;
