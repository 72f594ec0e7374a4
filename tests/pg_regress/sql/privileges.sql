-- Who may do what. anon and authenticated reach no auth table; functions are granted
-- one by one; the signing secret is visible to no one but the owner.
begin;
-- Tables and sequences: no privilege at all for the API roles.
select c.relname, r.rolname,
       has_table_privilege(r.rolname, c.oid, 'SELECT') as sel,
       has_table_privilege(r.rolname, c.oid, 'INSERT') as ins,
       has_table_privilege(r.rolname, c.oid, 'UPDATE') as upd,
       has_table_privilege(r.rolname, c.oid, 'DELETE') as del
  from pg_class c, (values ('anon'), ('authenticated'), ('service_role'), ('regress_authenticator')) r(rolname)
 where c.relnamespace = 'auth'::regnamespace and c.relkind in ('r', 'S')
   and (has_table_privilege(r.rolname, c.oid, 'SELECT') or has_table_privilege(r.rolname, c.oid, 'INSERT')
        or has_table_privilege(r.rolname, c.oid, 'UPDATE') or has_table_privilege(r.rolname, c.oid, 'DELETE'))
 order by 1, 2;

-- Functions: the EXECUTE matrix.
select p.oid::regprocedure as function,
       has_function_privilege('anon', p.oid, 'EXECUTE') as anon,
       has_function_privilege('authenticated', p.oid, 'EXECUTE') as authenticated,
       has_function_privilege('service_role', p.oid, 'EXECUTE') as service_role,
       has_function_privilege('regress_authenticator', p.oid, 'EXECUTE') as plain_login,
       p.prosecdef as definer,
       coalesce(array_to_string(p.proconfig, ','), '') as config
  from pg_proc p
 where p.pronamespace = 'auth'::regnamespace
 order by p.oid::regprocedure::text;

-- Every SECURITY DEFINER function pins search_path.
select count(*) as definer_without_search_path
  from pg_proc p
 where p.pronamespace = 'auth'::regnamespace and p.prosecdef
   and not exists (select 1 from unnest(p.proconfig) c where c like 'search_path=%');

-- The roles exist as Supabase has them.
select rolname, rolcanlogin, rolbypassrls from pg_roles
 where rolname in ('anon', 'authenticated', 'service_role') order by 1;

-- Attempts as anon and authenticated.
set local role anon;
select try('select secret from auth.signing_keys');
select try('select encrypted_password from auth.users');
select try('select * from auth.refresh_tokens');
select try($$insert into auth.users (id) values (gen_random_uuid())$$);
select try($$select auth.sign_jwt('{"role": "service_role"}')$$);
select try($$select auth.set_jwt_secret('an-attacker-chosen-secret-of-32-chars!!')$$);
select try($$select auth._sign_up('x@example.io', 'password-123', '{}')$$);
select try($$select auth._sign_jwt('{"role": "service_role"}')$$);
select try('select auth._random_secret()');
reset role;
-- No setting holds the secret (it lives only in the owner-only table).
select count(*) as settings_holding_the_secret
  from pg_settings s, auth.signing_keys k
 where strpos(s.setting, k.secret) > 0 or strpos(coalesce(s.reset_val, ''), k.secret) > 0;
set local role authenticated;
select try($$select auth.sign_jwt('{"role": "service_role"}')$$);
select try('update auth.signing_keys set secret = repeat(''x'', 40)');
reset role;
-- service_role may mint API keys.
set local role service_role;
select auth.verify_jwt(auth.sign_jwt('{"role": "anon"}')) ->> 'role' as service_role_minted;
reset role;

-- A search_path hijack: a caller's public.lower / public.now do not reach sign_up/sign_in.
create function public.lower(text) returns text language sql as $$ select 'hijacked@example.io' $$;
create function public.now() returns timestamptz language sql as $$ select '2000-01-01'::timestamptz $$;
set local search_path = public, pg_catalog;
select auth.sign_up('Hijack@Example.io', 'password-hijack') -> 'user' ->> 'email' as email_not_hijacked;
select auth.sign_in('hijack@example.io', 'password-hijack') -> 'user' ->> 'email' as sign_in_not_hijacked;
select created_at > '2001-01-01' as real_now from auth.users where email = 'hijack@example.io';
rollback;
