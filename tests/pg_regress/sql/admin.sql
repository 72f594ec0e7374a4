-- Admin API, anonymous users, ID-token sign-in and the custom access token hook.
-- The ID tokens below were signed once by a test issuer's ES256 key (its public half is
-- the JWKS) with an independent implementation (PyJWT); exp 4102444800 (year 2100), except
-- the expired one.
\set jwks '{"keys": [{"kty": "EC", "crv": "P-256", "x": "g-bTICVOUnQmO8OZ-4JSjJcwMHTZtlzvOqnaTBASeLc", "y": "eIGzsmMkDO4QoOza0JHZRluQLAbupDYaFxYteVbQBBo", "kid": "idp-1", "alg": "ES256", "use": "sig"}]}'
\set valid 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImlkcC0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbSIsImF1ZCI6ImNsaWVudC0xMjMiLCJzdWIiOiJpZHAtdXNlci0xIiwiZW1haWwiOiJpZHBAZXhhbXBsZS5pbyIsImVtYWlsX3ZlcmlmaWVkIjp0cnVlLCJuYW1lIjoiSWRwIFVzZXIiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0.yEnSookx-qYErNRQkkHF6gcEj50TIsKI3fCxR6jqGgLBdkAsx1gYHbdrX7HsuJodzWUVuAXXEwnSL5C-ERZ4pQ'
\set nonce 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImlkcC0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbSIsImF1ZCI6ImNsaWVudC0xMjMiLCJzdWIiOiJpZHAtdXNlci0yIiwiZW1haWwiOiJub25jZUBleGFtcGxlLmlvIiwiZW1haWxfdmVyaWZpZWQiOnRydWUsIm5hbWUiOiJJZHAgVXNlciIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwLCJub25jZSI6IjllM2YxNTYzMjRkNDJmMGVhNGI2ZjRmY2U4MWQ1NmZiZDY0YTIxNDNhM2ZkZDYwYTEzMGQ5YzkwZTViNGQ2ODgifQ.JjrY-N-40m4Or5a5eqZbeEfTarFJRkDPGEcImrGGtTFG6xX9SXvikBBgQyFKOwf6IXYgxYBq1dHR4o7XZ5cLcA'
\set wrongaud 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImlkcC0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbSIsImF1ZCI6Im90aGVyLWNsaWVudCIsInN1YiI6ImlkcC11c2VyLTEiLCJlbWFpbCI6ImlkcEBleGFtcGxlLmlvIiwiZW1haWxfdmVyaWZpZWQiOnRydWUsIm5hbWUiOiJJZHAgVXNlciIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.CrDy3vSM782w73sxECosZPv-ywilNpYo7c8Ly9Lel1RsFRl3g_DCOcsnGSllTW4JjeicJVVloCr0As5AN91OPQ'
\set expired 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImlkcC0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbSIsImF1ZCI6ImNsaWVudC0xMjMiLCJzdWIiOiJpZHAtdXNlci0xIiwiZW1haWwiOiJpZHBAZXhhbXBsZS5pbyIsImVtYWlsX3ZlcmlmaWVkIjp0cnVlLCJuYW1lIjoiSWRwIFVzZXIiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6MTcwMDAwMDEwMH0.7TzVCYy55a5KAiOTBSNhYAM30oM0DRRKrluV0Gewcs5K5jEAFjTBXoFrBV46pVZQYcnd1CWrDFdH1B5213Zbtw'
\set unknowniss 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImlkcC0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL3Vua25vd24uZXhhbXBsZS5jb20iLCJhdWQiOiJjbGllbnQtMTIzIiwic3ViIjoiaWRwLXVzZXItMSIsImVtYWlsIjoiaWRwQGV4YW1wbGUuaW8iLCJlbWFpbF92ZXJpZmllZCI6dHJ1ZSwibmFtZSI6IklkcCBVc2VyIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.rxLw-bbMPWNyGEFXlgpGO-eZSOVP0uYZxj3UirHfHsjnO_9VEYl60_INndz_CwL4jzpteJLDu4Z2CjYDDdBCLA'
\set link 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImlkcC0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbSIsImF1ZCI6ImNsaWVudC0xMjMiLCJzdWIiOiJpZHAtdXNlci0zIiwiZW1haWwiOiJsaW5rZWRAZXhhbXBsZS5pbyIsImVtYWlsX3ZlcmlmaWVkIjp0cnVlLCJuYW1lIjoiSWRwIFVzZXIiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0.b8EVL8CdNFMpeoMVuR7dwZiSaT2PRmMx-4bjDVlmDYARQd0iP-XCIDB2nMV3i88pcFpDUuUnifOX8wTWzQis5w'
\set unverified 'eyJhbGciOiJFUzI1NiIsImtpZCI6ImlkcC0xIiwidHlwIjoiSldUIn0.eyJpc3MiOiJodHRwczovL2lkcC5leGFtcGxlLmNvbSIsImF1ZCI6ImNsaWVudC0xMjMiLCJzdWIiOiJpZHAtdXNlci00IiwiZW1haWwiOiJsaW5rZWRAZXhhbXBsZS5pbyIsImVtYWlsX3ZlcmlmaWVkIjpmYWxzZSwibmFtZSI6IklkcCBVc2VyIiwiaWF0IjoxNzAwMDAwMDAwLCJleHAiOjQxMDI0NDQ4MDB9.3E_h-JalUSJ5jd8tWyDIk0EPesJ1g6bmmmH-ufcnamMt1iLB63jNQQIZkuCy6s9eK0r5qzbdS0anC8qoBVUfqw'
begin;
-- 1. Who may call the admin functions: service_role (and the owner); everyone else 42501.
select p.oid::regprocedure as function,
       has_function_privilege('anon', p.oid, 'execute') as anon,
       has_function_privilege('authenticated', p.oid, 'execute') as authenticated,
       has_function_privilege('service_role', p.oid, 'execute') as service_role
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
 where n.nspname = 'auth' and p.proname like 'admin\_%'
 order by 1::text;
set local role authenticated;
select try($$select auth.admin_create_user('{"email": "x@example.io"}')$$) as create_as_authenticated;
select try($$select auth.admin_get_user(gen_random_uuid())$$) as get_as_authenticated;
select try($$select auth.admin_list_users()$$) as list_as_authenticated;
select try($$select auth.admin_update_user(gen_random_uuid(), '{}')$$) as update_as_authenticated;
select try($$select auth.admin_delete_user(gen_random_uuid())$$) as delete_as_authenticated;
select try($$select auth.admin_generate_link('recovery', 'x@example.io')$$) as link_as_authenticated;
select try($$select auth.admin_invite_user('x@example.io')$$) as invite_as_authenticated;
set local role anon;
select try($$select auth.admin_list_users()$$) as list_as_anon;
reset role;

-- 2. Admin happy paths, as service_role.
set local role service_role;
select auth.admin_create_user('{"email": "Made@Example.io", "password": "made-by-admin-1", "email_confirm": true,
  "user_metadata": {"name": "Made"}, "app_metadata": {"plan": "pro"}}') as made \gset
select :'made'::jsonb ->> 'email' as email, :'made'::jsonb ->> 'email_confirmed_at' is not null as confirmed,
       :'made'::jsonb -> 'app_metadata' as app_metadata, :'made'::jsonb -> 'user_metadata' as user_metadata,
       :'made'::jsonb -> 'identities' -> 0 -> 'identity_data' -> 'email_verified' as identity_verified;
select auth.sign_in('made@example.io', 'made-by-admin-1') ->> 'token_type' as signs_in;
select auth.admin_create_user('{"email": "nopass@example.io"}') as nopass \gset
select :'nopass'::jsonb ->> 'email_confirmed_at' as unconfirmed_no_password;
select auth.admin_get_user((:'made'::jsonb ->> 'id')::uuid) ->> 'email' as got;
select auth.admin_list_users(1, 1) - 'users' as page_one, jsonb_array_length(auth.admin_list_users(1, 1) -> 'users') as users_on_page;
select auth.admin_list_users(1, 50, 'MADE') -> 'total' as filtered,
       auth.admin_list_users(1, 50, 'made%') -> 'total' as wildcard_literal;
select auth.admin_update_user((:'made'::jsonb ->> 'id')::uuid,
  '{"user_metadata": {"name": null, "team": "a"}, "app_metadata": {"plan": "team"}, "password": "changed-by-admin-2"}') as upd \gset
select :'upd'::jsonb -> 'user_metadata' as user_metadata, :'upd'::jsonb -> 'app_metadata' ->> 'plan' as plan;
select auth.sign_in('made@example.io', 'changed-by-admin-2') ->> 'token_type' as new_password;
select auth.admin_update_user((:'made'::jsonb ->> 'id')::uuid, '{"ban_duration": "24h"}') ? 'banned_until' as banned;
select try($$select auth.sign_in('made@example.io', 'changed-by-admin-2')$$) as banned_sign_in;
select auth.admin_update_user((:'made'::jsonb ->> 'id')::uuid, '{"ban_duration": "none"}') ? 'banned_until' as still_banned;
select auth.admin_update_user((:'made'::jsonb ->> 'id')::uuid, '{"email": "renamed@example.io"}') ->> 'email' as renamed;
select auth.admin_update_user((:'nopass'::jsonb ->> 'id')::uuid, '{"email_confirm": true}')
         ->> 'email_confirmed_at' is not null as confirmed_by_admin;
select auth.admin_generate_link('recovery', 'renamed@example.io') as glink \gset
select :'glink'::jsonb -> 'properties' ->> 'verification_type' as type,
       :'glink'::jsonb -> 'properties' ->> 'email_otp' ~ '^[0-9]{6}$' as has_code,
       :'glink'::jsonb -> 'properties' ->> 'action_link' like 'http://localhost:3000?token_hash=%&type=recovery' as action_link,
       (select count(*) from auth.email_outbox) as nothing_sent;
select auth.verify_jwt(auth.verify_otp(null, :'glink'::jsonb -> 'properties' ->> 'hashed_token', 'recovery') ->> 'access_token')
         -> 'amr' -> 0 ->> 'method' as link_works;
select auth.admin_generate_link('signup', 'linked-signup@example.io', 'signup-link-pass-1') -> 'user' ->> 'email' as signup_link_user;
select auth.admin_invite_user('invitee@example.io', '{"team": "a"}') ->> 'invited_at' is not null as invited;
select recipient, email_action_type from auth.email_outbox;
select auth.verify_jwt(auth.verify_otp('invitee@example.io', (select message -> 'email_data' ->> 'token' from auth.email_outbox), 'invite')
         ->> 'access_token') -> 'amr' -> 0 ->> 'method' as invite_accepted;
-- Delete: soft keeps the row and frees the address; hard removes it.
select auth.admin_delete_user((:'nopass'::jsonb ->> 'id')::uuid, true) ->> 'email' as soft_deleted;
reset role;
select email, deleted_at is not null as deleted, encrypted_password, raw_user_meta_data,
       (select count(*) from auth.identities i where i.user_id = u.id) as identities
  from auth.users u where deleted_at is not null;
set local role service_role;
select auth.admin_create_user('{"email": "nopass@example.io"}') as again \gset
select :'again'::jsonb ->> 'email' as address_free_again;
select auth.admin_delete_user((:'made'::jsonb ->> 'id')::uuid) ->> 'email' as hard_deleted;
select try(format('select auth.admin_get_user(%L)', :'made'::jsonb ->> 'id')) as gone;
reset role;
select array(select payload ->> 'action' || ' by ' || (payload -> 'traits' ->> 'actor_role')
               from auth.audit_log_entries where payload::jsonb -> 'traits' ? 'actor_role' order by created_at, payload::text) as admin_audit;
set local role service_role;

-- 3. Admin errors.
select try($$select auth.admin_create_user('{"email": "invitee@example.io"}')$$) as duplicate;
select try($$select auth.admin_create_user('{"email": "bad"}')$$) as bad_email;
select try($$select auth.admin_create_user('{"email": "p@example.io", "password": "short"}')$$) as weak;
select try($$select auth.admin_create_user('{"email": "p@example.io", "role": "service_role"}')$$) as unknown_key;
select try($$select auth.admin_create_user('{"email": "p@example.io", "user_metadata": []}')$$) as metadata_array;
select try($$select auth.admin_create_user('{"email": "p@example.io", "id": "nope"}')$$) as bad_id;
select try($$select auth.admin_create_user(null)$$) as null_attributes;
select try($$select auth.admin_get_user(gen_random_uuid())$$) as get_unknown;
select try($$select auth.admin_get_user(null)$$) as get_null;
select try($$select auth.admin_update_user(gen_random_uuid(), '{}')$$) as update_unknown;
select try(format('select auth.admin_update_user(%L, %L)', (:'again'::jsonb ->> 'id'), '{"ban_duration": "soon"}')) as bad_ban;
select try(format('select auth.admin_update_user(%L, %L)', (:'again'::jsonb ->> 'id'), '{"ban_duration": "-1h"}')) as negative_ban;
select try(format('select auth.admin_update_user(%L, %L)', (:'again'::jsonb ->> 'id'), '{"email": "invitee@example.io"}')) as email_taken;
select try(format('select auth.admin_update_user(%L, %L)', (:'again'::jsonb ->> 'id'), '{"email_confirm": "yes"}')) as confirm_not_boolean;
select try($$select auth.admin_delete_user(gen_random_uuid())$$) as delete_unknown;
select try($$select auth.admin_list_users(0)$$) as page_zero;
select try($$select auth.admin_list_users(1, 5000)$$) as page_too_big;
select try($$select auth.admin_generate_link('sms', 'x@example.io')$$) as link_type;
select try($$select auth.admin_generate_link('magiclink', 'nobody@example.io')$$) as link_unknown_user;
select try($$select auth.admin_generate_link('signup', 'x@example.io')$$) as signup_without_password;
select try($$select auth.admin_generate_link('invite', 'invitee@example.io')$$) as invite_existing;
reset role;
rollback;

-- 4. Anonymous users: off by default, rate-limited per IP, converted by an email change
-- that keeps the id and so the user's rows under RLS.
begin;
select try($$select auth.sign_in_anonymously()$$) as disabled;
set local auth.anonymous_sign_ins = on;
create table notes (id serial, owner uuid not null default auth.uid(), body text);
alter table notes enable row level security;
create policy own on notes using (owner = auth.uid()) with check (owner = auth.uid());
grant select, insert on notes to authenticated;
grant usage on sequence notes_id_seq to authenticated;
set local role anon;
select auth.sign_in_anonymously('{"theme": "dark"}') as anon \gset
reset role;
select :'anon'::jsonb -> 'user' ->> 'is_anonymous' as is_anonymous, :'anon'::jsonb -> 'user' ->> 'email' as email,
       :'anon'::jsonb -> 'user' -> 'user_metadata' as metadata,
       auth.verify_jwt(:'anon'::jsonb ->> 'access_token') -> 'is_anonymous' as claim,
       auth.verify_jwt(:'anon'::jsonb ->> 'access_token') ->> 'role' as role,
       auth.verify_jwt(:'anon'::jsonb ->> 'access_token') -> 'amr' -> 0 ->> 'method' as amr;
set local role authenticated;
select set_config('request.jwt.claims', auth.verify_jwt(:'anon'::jsonb ->> 'access_token')::text, true) is not null as claims_set;
insert into notes (body) values ('written while anonymous');
select auth.update_user('{"email": "Converted@Example.io", "password": "converted-password-1"}') ->> 'new_email' as pending;
reset role;
select message -> 'email_data' ->> 'token' as ccode from auth.email_outbox where recipient = 'converted@example.io' \gset
set local role anon;
select auth.verify_otp('converted@example.io', :'ccode', 'email_change') as conv \gset
reset role;
select (:'conv'::jsonb -> 'user' ->> 'id') = (:'anon'::jsonb -> 'user' ->> 'id') as same_id,
       :'conv'::jsonb -> 'user' ->> 'is_anonymous' as is_anonymous, :'conv'::jsonb -> 'user' ->> 'email' as email,
       :'conv'::jsonb -> 'user' -> 'app_metadata' as app_metadata;
select auth.sign_in('converted@example.io', 'converted-password-1') as perm \gset
set local role authenticated;
select set_config('request.jwt.claims', auth.verify_jwt(:'perm'::jsonb ->> 'access_token')::text, true) is not null as claims_set;
select body from notes;
reset role;
-- Per-IP limit.
set local auth.anonymous_rate_limit = 2;
select set_config('request.headers', '{"x-forwarded-for": "198.51.100.7"}', true) is not null as from_ip;
select auth.sign_in_anonymously() ->> 'token_type' as first, auth.sign_in_anonymously() ->> 'token_type' as second;
select try($$select auth.sign_in_anonymously()$$) as third;
select set_config('request.headers', '{"x-forwarded-for": "198.51.100.8"}', true) is not null as other_ip;
select auth.sign_in_anonymously() ->> 'token_type' as other_ip_signs_in;
select try($$select auth.sign_in_anonymously('[1]')$$) as bad_data;
rollback;

-- 5. Sign-in with an ID token from a registered issuer (client id client-123).
begin;
select auth.set_trusted_issuer('https://idp.example.com', :'jwks', '{client-123}') ->> 'issuer' as registered;
set local role anon;
select auth.sign_in_with_id_token('https://idp.example.com', :'valid') as idt \gset
reset role;
select :'idt'::jsonb -> 'user' ->> 'email' as email, :'idt'::jsonb -> 'user' ->> 'email_confirmed_at' is not null as confirmed,
       :'idt'::jsonb -> 'user' -> 'app_metadata' as app_metadata,
       :'idt'::jsonb -> 'user' -> 'identities' -> 0 ->> 'provider' as provider,
       :'idt'::jsonb -> 'user' -> 'identities' -> 0 ->> 'id' as provider_id,
       auth.verify_jwt(:'idt'::jsonb ->> 'access_token') -> 'amr' -> 0 ->> 'method' as amr;
-- The same identity again: the same user.
select (auth.sign_in_with_id_token('https://idp.example.com', :'valid') -> 'user' ->> 'id') = (:'idt'::jsonb -> 'user' ->> 'id') as same_user;
-- Nonce: the raw nonce is hashed as Google and Apple expect.
select auth.sign_in_with_id_token('https://idp.example.com', :'nonce', 'nonce-1') -> 'user' ->> 'email' as with_nonce;
select try(format('select auth.sign_in_with_id_token(%L, %L, %L)', 'https://idp.example.com', :'nonce', 'nonce-2')) as wrong_nonce;
select try(format('select auth.sign_in_with_id_token(%L, %L)', 'https://idp.example.com', :'nonce')) as nonce_missing;
select try(format('select auth.sign_in_with_id_token(%L, %L)', 'https://idp.example.com', :'wrongaud')) as wrong_audience;
select try(format('select auth.sign_in_with_id_token(%L, %L)', 'https://idp.example.com', :'expired')) as expired;
select try(format('select auth.sign_in_with_id_token(%L, %L)', 'https://unknown.example.com', :'unknowniss')) as unknown_issuer;
select try(format('select auth.sign_in_with_id_token(%L, %L)', 'google', :'valid')) as other_provider;
select try(format('select auth.sign_in_with_id_token(%L, %L)', 'https://idp.example.com', auth.sign_up('own@example.io', 'own-password-1') ->> 'access_token')) as our_own_token;
select try($$select auth.sign_in_with_id_token(null, 'x')$$) as no_provider;
select try($$select auth.sign_in_with_id_token('google', null)$$) as no_token;
select try($$select auth.sign_in_with_id_token('google', 'not.a.jwt')$$) as garbage;
-- With confirmations required, a new user from an unverified address is refused, as at
-- the provider callback: the address's owner would confirm that account, identity and all.
set local auth.require_email_confirmation = on;
select try(format('select auth.sign_in_with_id_token(%L, %L)', 'https://idp.example.com', :'unverified')) as needs_verification;
reset auth.require_email_confirmation;
select count(*) as not_created from auth.users where email = 'linked@example.io';
-- Linking by verified email to an existing user; an unverified address is not linked (the
-- token signs in a user of its own, without the address); linking off refuses.
select auth.sign_up('linked@example.io', 'linked-password-1') -> 'user' ->> 'id' as linked_id \gset
select try(format('select auth.sign_in_with_id_token(%L, %L)', 'https://idp.example.com', :'unverified')) as unverified_email;
set local auth.id_token_link_by_email = off;
select try(format('select auth.sign_in_with_id_token(%L, %L)', 'https://idp.example.com', :'link')) as linking_off;
reset auth.id_token_link_by_email;
select auth.sign_in_with_id_token('https://idp.example.com', :'link') -> 'user' as linked \gset
select (:'linked'::jsonb ->> 'id') = :'linked_id' as same_user,
       array(select i ->> 'provider' from jsonb_array_elements(:'linked'::jsonb -> 'identities') i order by 1) as identities,
       :'linked'::jsonb -> 'app_metadata' -> 'providers' as providers;
rollback;

-- 6. The custom access token hook: a role claim from a user-roles table that an RLS policy
-- then uses; the minimal token; a hook that raises, a malformed one, a denying one.
begin;
create table public.user_roles (user_id uuid primary key, role text not null);
create function public.add_user_role(event jsonb) returns jsonb language plpgsql stable as $$
declare
  r text;
begin
  select ur.role into r from public.user_roles ur where ur.user_id = (event ->> 'user_id')::uuid;
  return jsonb_build_object('claims', (event -> 'claims') || jsonb_build_object('user_role', coalesce(r, 'member')));
end $$;
create function public.minimal_token(event jsonb) returns jsonb language sql immutable as $$
  select jsonb_build_object('claims', (event -> 'claims') - 'user_metadata' - 'app_metadata') $$;
create function public.raising_hook(event jsonb) returns jsonb language plpgsql as $$
begin raise exception 'roles service unavailable'; end $$;
create function public.malformed_hook(event jsonb) returns jsonb language sql as $$
  select jsonb_build_object('claims', (event -> 'claims') - 'sub') $$;
create function public.denying_hook(event jsonb) returns jsonb language sql as $$
  select '{"error": {"http_code": 403, "message": "This account is suspended"}}'::jsonb $$;
-- Hooks run as supabase_auth_admin, never as the extension owner: the grants of
-- Supabase's hook documentation, unchanged, let it read the roles table.
grant usage on schema public to supabase_auth_admin;
grant execute on function public.add_user_role to supabase_auth_admin;
revoke execute on function public.add_user_role from authenticated, anon, public;
grant all on table public.user_roles to supabase_auth_admin;
revoke all on table public.user_roles from authenticated, anon, public;
alter table public.user_roles enable row level security;
create policy "Allow auth admin to read user roles" on public.user_roles
  as permissive for select to supabase_auth_admin using (true);
create table reports (id int, body text);
alter table reports enable row level security;
create policy admins_only on reports using (auth.jwt() ->> 'user_role' = 'admin');
grant select on reports to authenticated;
insert into reports values (1, 'quarterly numbers');
select auth.sign_up('boss@example.io', 'boss-password-1') -> 'user' ->> 'id' as boss \gset
select auth.sign_up('staff@example.io', 'staff-password-1') -> 'user' ->> 'id' as staff \gset
insert into user_roles values (:'boss', 'admin');
set local auth.hook_custom_access_token = 'public.add_user_role';
select auth.sign_in('boss@example.io', 'boss-password-1') as b \gset
select auth.sign_in('staff@example.io', 'staff-password-1') as s \gset
select auth.verify_jwt(:'b'::jsonb ->> 'access_token') ->> 'user_role' as boss_role,
       auth.verify_jwt(:'s'::jsonb ->> 'access_token') ->> 'user_role' as staff_role;
set local role authenticated;
select set_config('request.jwt.claims', auth.verify_jwt(:'b'::jsonb ->> 'access_token')::text, true) is not null as as_boss;
select body from reports;
select set_config('request.jwt.claims', auth.verify_jwt(:'s'::jsonb ->> 'access_token')::text, true) is not null as as_staff;
select count(*) as staff_sees from reports;
reset role;
-- The hook runs on refresh too, with authentication_method from the session.
select auth.verify_jwt(auth.refresh(:'b'::jsonb ->> 'refresh_token') ->> 'access_token') ->> 'user_role' as after_refresh;
set local auth.hook_custom_access_token = 'public.minimal_token';
select auth.verify_jwt(auth.sign_in('boss@example.io', 'boss-password-1') ->> 'access_token') ?| array['user_metadata', 'app_metadata'] as has_metadata;
set local auth.hook_custom_access_token = 'public.raising_hook';
select try($$select auth.sign_in('boss@example.io', 'boss-password-1')$$) as raising;
set local auth.hook_custom_access_token = 'public.malformed_hook';
select try($$select auth.sign_in('boss@example.io', 'boss-password-1')$$) as malformed;
set local auth.hook_custom_access_token = 'public.denying_hook';
select try($$select auth.sign_in('boss@example.io', 'boss-password-1')$$) as denied;
set local auth.hook_custom_access_token = 'public.no_such_hook';
select try($$select auth.sign_in('boss@example.io', 'boss-password-1')$$) as missing;
-- What the hook role may not do: read the keys, or act as the owner.
create function public.key_reading_hook(event jsonb) returns jsonb language plpgsql as $$
begin
  perform count(*) from auth.signing_keys;
  return event;
end $$;
set local auth.hook_custom_access_token = 'public.key_reading_hook';
select try($$select auth.sign_in('boss@example.io', 'boss-password-1')$$) as reads_keys;
create function public.who_runs_hooks(event jsonb) returns jsonb language sql as $$
  select jsonb_build_object('claims', (event -> 'claims') || jsonb_build_object('hook_user', current_user::text)) $$;
set local auth.hook_custom_access_token = 'public.who_runs_hooks';
select auth.verify_jwt(auth.sign_in('boss@example.io', 'boss-password-1') ->> 'access_token') ->> 'hook_user' as hook_user;
-- A hook role that could reach the auth tables is refused before any hook runs.
grant select on auth.users to supabase_auth_admin;
select try($$select auth.sign_in('boss@example.io', 'boss-password-1')$$) as hook_role_too_strong;
revoke select on auth.users from supabase_auth_admin;
rollback;

-- Failed sign-ins above were recorded by autonomous transactions, which no rollback undoes.
delete from auth.audit_log_entries;
delete from auth.sign_in_failures;
