-- What a GoTrue-compatible HTTP server calls per request: auth.authenticate_request (the API
-- gateway's key check, then auth.authenticate) and auth.settings() (GoTrue's GET /settings).
-- Calls are made as regress_authenticator, a NOINHERIT login role granted anon and
-- authenticated, as the server's login role is.
begin;
select auth.sign_jwt('{"role": "anon", "iss": "supabase"}') as anon_key \gset
select auth.sign_jwt('{"role": "service_role", "iss": "supabase"}') as service_key \gset
select auth.sign_jwt('{"role": "authenticated", "iss": "supabase"}') as authenticated_key \gset
select auth.sign_jwt(jsonb_build_object('role', 'anon', 'exp', extract(epoch from now())::int - 3600)) as expired_key \gset
select auth.sign_up('gateway@example.io', 'gateway-password-1') as s \gset
select :'s'::jsonb ->> 'access_token' as user_token, :'s'::jsonb -> 'user' ->> 'id' as user_id \gset
-- A key of another project (signed with a key this database no longer has).
select kid as own_kid from auth.signing_keys where state = 'in_use' \gset
select auth.create_signing_key('HS256', 'gw-other') ->> 'kid' as other_kid;
select auth.promote_signing_key('gw-other') ->> 'state' as other_signs;
select auth.sign_jwt('{"role": "anon", "iss": "supabase"}') as foreign_key \gset
-- A trusted third party's token that looks like an API key (role anon, no sub).
select auth.create_signing_key('ES256', 'gw-idp') ->> 'kid' as idp_kid;
select auth.promote_signing_key('gw-idp') ->> 'state' as idp_signs;
select auth.sign_jwt(jsonb_build_object('iss', 'https://idp.gateway.example', 'aud', 'gw-app', 'role', 'anon',
                                        'exp', extract(epoch from now())::int + 3600)) as idp_key \gset
select public_jwk as idp_jwk from auth.signing_keys where kid = 'gw-idp' \gset
select auth.promote_signing_key(:'own_kid') ->> 'state' as back;
delete from auth.signing_keys where kid in ('gw-other', 'gw-idp');
select auth.set_trusted_issuer('https://idp.gateway.example', jsonb_build_object('keys', jsonb_build_array(:'idp_jwk'::jsonb)),
                               '{gw-app}', '{role}', '{"anon": "anon"}', 'anon') ->> 'issuer' as registered;
-- The issuer's token verifies (it is a valid third-party token) ...
select auth.verify_jwt(:'idp_key') ->> 'role' as idp_token_role;

set local session authorization regress_authenticator;
-- 1. The API key alone: its own role and claims, as the gateway passes it on as the bearer.
select auth.authenticate_request(:'anon_key', null) ->> 'role' as claims_role;
select current_user, auth.role(), auth.uid();
-- 2. A user's access token with the API key: the user's role and claims.
select auth.authenticate_request(:'anon_key', :'user_token') ->> 'sub' = :'user_id' as user_claims;
select current_user, auth.uid() = :'user_id'::uuid as uid_is_user;
-- 3. The service key checks as a key; acting as service_role still needs the membership,
-- which this login role lacks (auth.authenticate's rule).
select auth.authenticate_request(:'service_key', :'user_token') ->> 'sub' = :'user_id' as service_key_with_user_token;
select try(format('select auth.authenticate_request(%L, null)', :'service_key')) as service_key_alone;
-- 4. Refused keys: all the same error, class 28.
select try('select auth.authenticate_request(null, null)') as no_key;
select try($$select auth.authenticate_request('', null)$$) as empty_key;
select try($$select auth.authenticate_request('not.a.jwt', null)$$) as malformed;
select try(format('select auth.authenticate_request(%L, null)', :'user_token')) as user_token_as_key;
select try(format('select auth.authenticate_request(%L, %L)', :'user_token', :'user_token')) as user_token_as_key_and_bearer;
select try(format('select auth.authenticate_request(%L, null)', :'authenticated_key')) as authenticated_role_key;
select try(format('select auth.authenticate_request(%L, null)', :'expired_key')) as expired_key;
select try(format('select auth.authenticate_request(%L, null)', :'foreign_key')) as other_projects_key;
select try(format('select auth.authenticate_request(%L, null)', :'idp_key')) as trusted_issuers_token;
select try(format('select auth.authenticate_request(%L, %L)', :'idp_key', :'user_token')) as trusted_issuer_key_with_user;
-- ... nothing changed for the transaction after a refusal.
select current_user, auth.role();
-- 5. A good key with a bad bearer: the bearer's error, as auth.authenticate gives it.
select try(format('select auth.authenticate_request(%L, %L)', :'anon_key', 'not.a.jwt')) as bad_bearer;
select try(format('select auth.authenticate_request(%L, %L)', :'anon_key', :'foreign_key')) as foreign_bearer;
-- A third party's token is a bearer like any other (auth.authenticate accepts it), only
-- never an API key.
select auth.authenticate_request(:'anon_key', :'idp_key') ->> 'iss' as iss;
select current_user;
reset session authorization;
rollback;

-- The legacy per-claim settings are emptied, as auth.authenticate does.
begin;
select auth.sign_jwt('{"role": "anon", "iss": "supabase"}') as anon_key \gset
select auth.sign_up('gateway2@example.io', 'gateway-password-2') -> 'access_token' #>> '{}' as user_token \gset
select set_config('request.jwt.claim.sub', '00000000-0000-0000-0000-0000000000aa', true) is not null as legacy_set;
set local session authorization regress_authenticator;
select auth.authenticate_request(:'anon_key', :'user_token') is not null as authenticated,
       auth.uid() <> '00000000-0000-0000-0000-0000000000aa' as legacy_ignored,
       current_setting('request.jwt.claim.sub') as legacy_sub;
reset session authorization;
rollback;

-- auth.settings(): GoTrue's /settings from this database's settings.
begin;
set local role anon;
select jsonb_pretty(auth.settings()) as settings;
select array(select jsonb_object_keys(auth.settings()) order by 1) as keys,
       array(select jsonb_object_keys(auth.settings() -> 'external') order by 1) as providers;
reset role;
set local auth.anonymous_sign_ins = on;
set local auth.require_email_confirmation = on;
select auth.create_signing_key('ES256', 'gw-google') ->> 'kid' as google_kid;
select public_jwk as google_jwk from auth.signing_keys where kid = 'gw-google' \gset
delete from auth.signing_keys where kid = 'gw-google';
select auth.set_trusted_issuer('https://accounts.google.com', jsonb_build_object('keys', jsonb_build_array(:'google_jwk'::jsonb)),
                               '{my-client-id}') ->> 'issuer' as google_registered;
set local role authenticated;
select s -> 'external' -> 'anonymous_users' as anonymous_users, s -> 'external' -> 'google' as google,
       s -> 'external' -> 'apple' as apple, s -> 'mailer_autoconfirm' as mailer_autoconfirm,
       (select count(*) from jsonb_each(s -> 'external') e where e.value = 'true') as providers_on
  from auth.settings() s;
reset role;
set local role service_role;
select auth.settings() -> 'external' -> 'google' as google_for_service_role;
reset role;
rollback;
