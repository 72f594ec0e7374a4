-- Sign-in with OAuth / OIDC providers, the SQL side (the HTTP server's /authorize and
-- /callback call these; the redirects and the provider are in the client tests): the
-- state, single-use and expiring; the two callback steps, the role auth_oauth's alone;
-- what the provider's user may contain; new, returning and linked users; PKCE codes;
-- linking and unlinking for a signed-in user. Runs in one transaction, rolled back.
begin;
set local auth.site_url = 'https://app.example.io';
set local auth.redirect_allow_list = 'myapp://cb';
set local auth.email_rate_limit = 0;

-- 1. Starting a flow (anyone): a state of 256 bits, only its hash stored; redirect_to
-- within the site or the allow list, else the site; the provider name checked.
set local role anon;
select x ->> 'provider' as provider, length(x ->> 'state') as state_length, x ->> 'redirect_to' as redirect_to
  from auth.oauth_authorize('GitHub', 'https://app.example.io/welcome') x;
select auth.oauth_authorize('github', 'https://evil.example/steal') ->> 'redirect_to' as outside_goes_to_site;
select auth.oauth_authorize('github', 'myapp://cb/done') ->> 'redirect_to' as allow_listed;
select try('select auth.oauth_authorize(null)') as no_provider;
select try('select auth.oauth_authorize(''../etc'')') as bad_name;
select try('select auth.oauth_authorize(''email'')') as not_an_oauth_provider;
select try(format('select auth.oauth_authorize(%L)', repeat('a', 33))) as too_long;
select try('select auth.oauth_authorize(''github'', null, ''short'', ''s256'')') as bad_challenge;
select try('select auth.oauth_authorize(''github'', null, null, ''s256'')') as method_only;
-- The states are not the caller's to read, nor the callback's steps to call.
select try('select count(*) from auth.oauth_states') as read_states;
select try('select auth.oauth_callback(''x'')') as anon_callback;
select try('select auth.oauth_sign_in(gen_random_uuid(), ''{}'')') as anon_sign_in;
reset role;
select count(*) as states, bool_and(length(state_hash) = 64) as hashed from auth.oauth_states;
savepoint no_site;
set local auth.site_url = '';
set local role anon;
select try('select auth.oauth_authorize(''github'', ''https://anywhere.example'')') as no_site_url;
rollback to savepoint no_site;

-- 2. The callback's first step takes the state once.
select auth.oauth_authorize('github', 'https://app.example.io/a') ->> 'state' as s1 \gset
set local role auth_oauth;
select x ? 'flow' as has_flow, x ->> 'provider' as provider, x ->> 'redirect_to' as redirect_to
  from auth.oauth_callback(:'s1') x;
select auth.oauth_callback(:'s1') as replay;
select auth.oauth_callback('not-a-state') as unknown;
select auth.oauth_callback(null) as missing;
select auth.oauth_callback(repeat('x', 100000)) -> 'error' ->> 'code' as huge;
reset role;
-- Expired: ten minutes to come back.
select auth.oauth_authorize('github', 'https://app.example.io/b') ->> 'state' as s2 \gset
update auth.oauth_states set created_at = now() - interval '11 minutes' where state_hash = auth._sha256_hex(:'s2');
set local role auth_oauth;
select auth.oauth_callback(:'s2') as expired;
reset role;
-- The provider's own error (the user denied): back to the flow's redirect, bounded.
select auth.oauth_authorize('github', 'https://app.example.io/c') ->> 'state' as s3 \gset
set local role auth_oauth;
select auth.oauth_callback(:'s3', 'access_denied', E'The user denied\nyour request') as denied;
reset role;
select auth.oauth_authorize('github', 'https://app.example.io/c') ->> 'state' as s4 \gset
set local role auth_oauth;
select auth.oauth_callback(:'s4', 'Weird Error!', repeat('d', 600)) -> 'error' ->> 'code' as unknown_error_name,
       length(auth.oauth_callback(:'s4') ->> 'error') > 0 as used_up;
reset role;

-- 3. The second step: the provider's user signs in. A new user, then the same one again.
create function pg_temp.flow(provider text, redirect text default 'https://app.example.io/in',
                             challenge text default null) returns uuid
language plpgsql as $$
declare
  st text := auth.oauth_authorize(provider, redirect, challenge, case when challenge is not null then 'plain' end) ->> 'state';
  f uuid;
begin
  set local role auth_oauth;
  f := (auth.oauth_callback(st) ->> 'flow')::uuid;
  reset role;
  return f;
end
$$;
select pg_temp.flow('github') as f1 \gset
set local role auth_oauth;
select x ->> 'redirect_to' as redirect_to, x -> 'session' ->> 'token_type' as token_type,
       x -> 'session' -> 'user' ->> 'email' as email,
       x -> 'session' -> 'user' -> 'app_metadata' as app_metadata,
       x ->> 'provider_token' as provider_token
  from auth.oauth_sign_in(:'f1', '{"subject": "101", "email": "Octo@Example.io", "email_verified": true,
                                   "identity_data": {"sub": "101", "user_name": "octo", "email": "octo@example.io"},
                                   "provider_token": "gho_abc"}') x;
select auth.oauth_sign_in(:'f1', '{"subject": "101"}') as flow_used_up;
reset role;
select u.email, u.email_confirmed_at is not null as confirmed, i.provider, i.provider_id, i.identity_data ->> 'user_name' as user_name
  from auth.users u join auth.identities i on i.user_id = u.id where u.email = 'octo@example.io';
select pg_temp.flow('github') as f2, (select id from auth.users where email = 'octo@example.io') as octo \gset
set local role auth_oauth;
select (x -> 'session' -> 'user' ->> 'id') = :'octo' as same_user
  from auth.oauth_sign_in(:'f2', '{"subject": "101", "email": "octo@example.io", "email_verified": true,
                                   "identity_data": {"sub": "101", "user_name": "octo-renamed"}}') x;
reset role;
select count(*) as identities, max(identity_data ->> 'user_name') as updated_data
  from auth.identities where provider = 'github' and provider_id = '101';
select payload ->> 'action' as action from auth.audit_log_entries
 where payload ->> 'actor_username' = 'octo@example.io' and payload ->> 'action' in ('user_signedup', 'login')
 order by created_at, (payload ->> 'action') desc;

-- 4. What the provider's user may be: each refusal answered, nothing kept.
create function pg_temp.try_sign_in(identity text) returns text
language plpgsql as $$
declare
  f uuid := pg_temp.flow('github');
  x jsonb;
begin
  set local role auth_oauth;
  x := auth.oauth_sign_in(f, identity::jsonb);
  reset role;
  return coalesce((x -> 'error' ->> 'code') || ': ' || (x -> 'error' ->> 'message'), 'signed in');
end
$$;
select pg_temp.try_sign_in('[]') as not_an_object;
select pg_temp.try_sign_in('{"email": "x@example.io"}') as no_subject;
select pg_temp.try_sign_in(format('{"subject": "%s"}', repeat('9', 256))) as long_subject;
select pg_temp.try_sign_in('{"subject": "a\u0001b"}') as control_character;
select pg_temp.try_sign_in('{"subject": "102", "email": "not an address"}') as bad_email;
select pg_temp.try_sign_in('{"subject": "103", "identity_data": []}') as data_not_object;
select pg_temp.try_sign_in(format('{"subject": "104", "identity_data": {"name": "%s"}}', repeat('n', 20000))) as data_too_big;
select pg_temp.try_sign_in(format('{"subject": "105", "provider_token": "%s"}', repeat('t', 9000))) as token_too_long;
select count(*) as kept from auth.identities where provider = 'github' and provider_id in ('102', '103', '104', '105');

-- 5. Linking by email: a verified address joins the existing user (whose unconfirmed
-- password and other identities go); an unverified one does not.
select auth.sign_up('pat@example.io', 'correct horse battery') is not null as pat_signed_up;
select pg_temp.try_sign_in('{"subject": "201", "email": "pat@example.io", "email_verified": false}') as unverified;
update auth.users set email_confirmed_at = null where email = 'pat@example.io';
select pg_temp.try_sign_in('{"subject": "203", "email": "pat@example.io", "email_verified": true}') as verified;
select (select count(*) from auth.identities i join auth.users u on u.id = i.user_id where u.email = 'pat@example.io') as identities,
       encrypted_password = '' as password_dropped, email_confirmed_at is not null as confirmed
  from auth.users where email = 'pat@example.io';
-- With confirmations required, a new user from an unverified address is refused.
set local auth.require_email_confirmation = on;
select pg_temp.try_sign_in('{"subject": "202", "email": "new@example.io", "email_verified": false}') as needs_verification;
reset auth.require_email_confirmation;

-- 6. PKCE: a code instead of a session; the provider's tokens only when asked, sealed.
select pg_temp.flow('github', 'https://app.example.io/p', 'pkce-challenge-0123456789-0123456789-0123456789') as f3 \gset
set local role auth_oauth;
select x ? 'session' as has_session, length(x ->> 'code') as code_length
  from auth.oauth_sign_in(:'f3', '{"subject": "101", "email": "octo@example.io", "email_verified": true, "provider_token": "gho_x"}') x;
reset role;
select provider_type, authentication_method, code_challenge_method, provider_access_token is null as no_token_kept
  from auth.flow_state where provider_type = 'github';
set local auth.keep_provider_tokens = on;
select pg_temp.flow('github', 'https://app.example.io/p', 'pkce-challenge-0123456789-0123456789-0123456789') as f4 \gset
set local role auth_oauth;
select auth.oauth_sign_in(:'f4', '{"subject": "101", "provider_token": "gho_secret"}') ->> 'code' as code4 \gset
reset role;
select left(provider_access_token, 3) as sealed, provider_access_token not like '%gho_secret%' as not_plain
  from auth.flow_state where auth_code = auth._sha256_hex(:'code4');
-- Moved to another row, a sealed token does not open.
select regexp_replace(try(format('select auth._open_provider_token(gen_random_uuid(), ''access'', %L)',
                  (select provider_access_token from auth.flow_state where auth_code = auth._sha256_hex(:'code4')))),
                      '[0-9a-f-]{36}', '<flow id>') as moved;
set local role anon;
select x ->> 'provider_token' as provider_token, x -> 'user' ->> 'email' as email
  from auth.exchange_code_for_session(:'code4', 'pkce-challenge-0123456789-0123456789-0123456789') x;
reset role;
reset auth.keep_provider_tokens;

-- 7. Linking and unlinking for a signed-in user (auth.manual_linking_enabled).
select (auth.sign_up('quinn@example.io', 'correct horse battery') ->> 'access_token') as quinn \gset
select auth.authenticate(:'quinn') is not null as quinn_authenticated;
select try('select auth.link_identity(''github'')') as linking_off;
reset role;
set local auth.manual_linking_enabled = on;
select auth.authenticate(:'quinn') is not null as quinn_authenticated;
select auth.link_identity('gitlab', 'https://app.example.io/linked') ->> 'state' as s5 \gset
reset role;
select linking_target_id = (select id from auth.users where email = 'quinn@example.io') as bound_to_quinn
  from auth.oauth_states where state_hash = auth._sha256_hex(:'s5');
set local role auth_oauth;
select (auth.oauth_sign_in((auth.oauth_callback(:'s5') ->> 'flow')::uuid,
        '{"subject": "gl-1", "email": "quinn-elsewhere@example.io", "email_verified": true}') -> 'session' -> 'user' ->> 'email') as linked_user;
reset role;
select provider from auth.identities i join auth.users u on u.id = i.user_id where u.email = 'quinn@example.io' order by 1;
-- Octo's GitHub identity cannot be linked to Quinn.
select auth.authenticate(:'quinn') is not null as quinn_again;
select auth.link_identity('github') ->> 'state' as s6 \gset
reset role;
set local role auth_oauth;
select auth.oauth_sign_in((auth.oauth_callback(:'s6') ->> 'flow')::uuid, '{"subject": "101"}') -> 'error' ->> 'code' as taken;
reset role;
-- Unlink: another's identity is not found, the last one stays.
select (select id from auth.identities where provider = 'github' and provider_id = '101') as octo_identity,
       (select id from auth.identities where provider = 'gitlab' and provider_id = 'gl-1') as quinn_gitlab,
       (select i.id from auth.identities i join auth.users u on u.id = i.user_id
         where u.email = 'quinn@example.io' and i.provider = 'email') as quinn_email \gset
select auth.authenticate(:'quinn') is not null as quinn_again;
select try(format('select auth.unlink_identity(%L)', :'octo_identity')) as not_yours;
select auth.unlink_identity(:'quinn_gitlab') as unlinked;
select try(format('select auth.unlink_identity(%L)', :'quinn_email')) as last_one;
reset role;
select raw_app_meta_data -> 'providers' as providers from auth.users where email = 'quinn@example.io';

-- 8. auth_oauth may never be a role of a token, and old states are cleaned up.
select auth._role_refusal('auth_oauth') as refusal;
update auth.oauth_states set created_at = now() - interval '1 hour';
select auth.cleanup() ->> 'oauth_states' as cleaned;
select count(*) as left_over from auth.oauth_states;
rollback;
