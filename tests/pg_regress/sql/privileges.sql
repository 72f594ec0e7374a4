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

-- Keys and trusted issuers: managed by service_role, never readable by the API roles;
-- the public keys are for everyone and hold no private or symmetric part.
set local role authenticated;
select try($$select auth.create_signing_key('ES256')$$);
select try($$select auth.import_signing_key('{"kty":"oct","k":"c2VjcmV0"}')$$);
select try($$select auth.promote_signing_key('x')$$);
select try($$select auth.revoke_signing_key('x')$$);
select try($$select * from auth.list_signing_keys()$$);
select try($$select auth.set_trusted_issuer('https://evil.example', '{"keys":[]}', '{a}')$$);
select try($$select auth.drop_trusted_issuer('https://evil.example')$$);
select try($$select auth._new_key_material('ES256', null, 'k')$$);
select try('select * from auth.trusted_issuers');
select jsonb_typeof(auth.jwks() -> 'keys') as jwks_for_authenticated;
reset role;
set local role anon;
select try($$select auth.create_signing_key('ES256')$$);
select jsonb_typeof(auth.jwks() -> 'keys') as jwks_for_anon;
reset role;
set local role service_role;
select auth.create_signing_key('EdDSA', 'priv-test') ->> 'state' as service_role_creates;
select count(*) filter (where kid = 'priv-test') as listed,
       bool_and(public_jwk is null or not public_jwk ?| array['d', 'p', 'q', 'k']) as no_private_part
  from auth.list_signing_keys();
select try('select secret from auth.signing_keys');
reset role;
select auth.create_signing_key('RS256', 'priv-rsa') ->> 'kid' as kid;
select auth.create_signing_key('ES256', 'priv-ec') ->> 'kid' as kid;
select auth.create_signing_key('HS256', 'priv-hs') ->> 'kid' as kid;
select k ->> 'kid' as kid, k ->> 'kty' as kty, k ->> 'alg' as alg,
       k ?| array['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'] as has_private_member
  from jsonb_array_elements(auth.jwks() -> 'keys') k
 where k ->> 'kid' like 'priv-%' order by 1;
-- No secret of any key appears in the JWKS text.
select count(*) as secrets_in_jwks from auth.signing_keys k
 where k.secret is not null and strpos(auth.jwks()::text, k.secret) > 0;

-- A search_path hijack: a caller's public.lower / public.now do not reach sign_up/sign_in.
create function public.lower(text) returns text language sql as $$ select 'hijacked@example.io' $$;
create function public.now() returns timestamptz language sql as $$ select '2000-01-01'::timestamptz $$;
set local search_path = public, pg_catalog;
select auth.sign_up('Hijack@Example.io', 'password-hijack') -> 'user' ->> 'email' as email_not_hijacked;
select auth.sign_in('hijack@example.io', 'password-hijack') -> 'user' ->> 'email' as sign_in_not_hijacked;
select created_at > '2001-01-01' as real_now from auth.users where email = 'hijack@example.io';

-- More hijacks, placed before pg_catalog: an = for text that is always true, a crypt()
-- and a sha256(). A wrong password, an unknown email, a bad token, a foreign role and an
-- ended session must all still fail.
create function public.always_equal(text, text) returns boolean language sql as 'select true';
create operator public.= (leftarg = text, rightarg = text, function = public.always_equal);
create function public.always_equal_uuid(uuid, uuid) returns boolean language sql as 'select true';
create operator public.= (leftarg = uuid, rightarg = uuid, function = public.always_equal_uuid);
create function public.crypt(text, text) returns text language sql as $$ select $2 $$;
create function public.sha256(bytea) returns bytea language sql as $$ select '\x00'::bytea $$;
set local search_path = public, pg_catalog;
select try($$select auth.sign_in('hijack@example.io', 'a-wrong-password')$$);
select try($$select auth.sign_in('nobody-at-all@example.io', 'password-hijack')$$);
select try($$select auth.refresh('no-such-refresh-token')$$);
select try($$select auth.verify_jwt('eyJhbGciOiJIUzI1NiJ9.e30.AAAA')$$);
select auth.sign_jwt('{"role": "service_role"}') as service_token \gset
set local session authorization regress_authenticator;
select try(format('select auth.authenticate(%L)', :'service_token'));
reset session authorization;
set local auth.session_check = on;
select set_config('request.jwt.claims', '{"sub": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "session_id": "b0eebc99-9c0b-4ef8-bb6d-6bb9bd380a22"}', true) is not null as claims_set;
select auth.uid() as uid_of_an_unknown_session;
reset auth.session_check;
reset search_path;

-- The secret through every setting view: no setting holds it, none is even named for it.
select try($$select current_setting('auth.jwt_secret')$$);
select count(*) as role_or_database_settings_with_secret
  from pg_db_role_setting s, unnest(s.setconfig) c, auth.signing_keys k
 where strpos(c, k.secret) > 0;
select count(*) as auth_settings_named_secret from pg_settings where name like 'auth.%' and name like '%secret%';
rollback;
