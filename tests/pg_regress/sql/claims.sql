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
