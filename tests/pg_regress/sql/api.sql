-- sign_up / sign_in: the session object, the stored rows, and every error.
begin;
select auth.sign_up('Alice@Example.io', 'correct horse battery', '{"name": "Alice"}') as signup \gset

-- GoTrue's session object and user object.
select array(select jsonb_object_keys(:'signup'::jsonb) order by 1) as session_keys;
select array(select jsonb_object_keys(:'signup'::jsonb -> 'user') order by 1) as user_keys;
select s ->> 'token_type' as token_type,
       (s ->> 'expires_in')::int as expires_in,
       (s ->> 'expires_at')::bigint - extract(epoch from now())::bigint between 3590 and 3610 as expires_at_ok,
       length(s ->> 'refresh_token') as refresh_token_length,
       s -> 'user' ->> 'email' as email,
       s -> 'user' ->> 'aud' as aud,
       s -> 'user' ->> 'role' as role,
       s -> 'user' -> 'app_metadata' as app_metadata,
       s -> 'user' -> 'user_metadata' as user_metadata,
       s -> 'user' -> 'is_anonymous' as is_anonymous,
       s -> 'user' ->> 'email_confirmed_at' like '____-__-__T__:__:__.______Z' as confirmed_utc,
       jsonb_array_length(s -> 'user' -> 'identities') as identities
  from (select :'signup'::jsonb as s) x;

-- The access token's claims are Supabase's.
select array(select jsonb_object_keys(auth.verify_jwt(:'signup'::jsonb ->> 'access_token')) order by 1) as claim_names;
select c ->> 'sub' = :'signup'::jsonb -> 'user' ->> 'id' as sub_is_user_id,
       c ->> 'aud' as aud, c ->> 'role' as role, c ->> 'aal' as aal, c ->> 'iss' as iss,
       c ->> 'email' as email, c ->> 'phone' as phone, c -> 'is_anonymous' as is_anonymous,
       c -> 'amr' -> 0 ->> 'method' as amr_method,
       (c ->> 'exp')::bigint - (c ->> 'iat')::bigint as lifetime,
       c -> 'app_metadata' as app_metadata, c -> 'user_metadata' as user_metadata
  from auth.verify_jwt(:'signup'::jsonb ->> 'access_token') c;

-- The stored rows: user, identity, session (named by session_id), hashed refresh token.
select email, aud, role, encrypted_password like '$argon2id$v=19$m=19456,t=2,p=1$%' as argon2id,
       email_confirmed_at is not null as confirmed, confirmed_at = email_confirmed_at as confirmed_at_generated,
       raw_app_meta_data, raw_user_meta_data, is_anonymous, is_sso_user
  from auth.users;
select provider, provider_id = user_id::text as provider_id_is_user, identity_data ->> 'email' as email, email as generated_email
  from auth.identities;
select count(*) as sessions_named_by_token
  from auth.sessions s
 where s.id = (auth.verify_jwt(:'signup'::jsonb ->> 'access_token') ->> 'session_id')::uuid
   and s.aal = 'aal1';
select count(*) filter (where token = :'signup'::jsonb ->> 'refresh_token') as stored_in_plain_text,
       count(*) filter (where token = encode(sha256(convert_to(:'signup'::jsonb ->> 'refresh_token', 'UTF8')), 'hex')) as stored_as_sha256
  from auth.refresh_tokens;
select payload ->> 'action' as action, payload ->> 'actor_username' as actor from auth.audit_log_entries order by created_at;

-- One account per email, whatever the case or surrounding spaces.
select try($$select auth.sign_up('alice@example.io', 'another long password')$$);
select try($$select auth.sign_up('  ALICE@EXAMPLE.IO ', 'another long password')$$);

-- Sign-in: case-insensitive email; unknown email and wrong password are the same error.
select auth.sign_in('ALICE@example.io', 'correct horse battery') -> 'user' ->> 'email' as signed_in;
select try($$select auth.sign_in('alice@example.io', 'wrong password!')$$);
select try($$select auth.sign_in('nobody@example.io', 'correct horse battery')$$);
select last_sign_in_at is not null as last_sign_in_recorded from auth.users;
select count(*) as sessions from auth.sessions;

-- Every bad input: a clear error with a SQLSTATE, and nothing written.
select try($$select auth.sign_up('not-an-email', 'correct horse battery')$$);
select try($$select auth.sign_up(null, 'correct horse battery')$$);
select try($$select auth.sign_up('', 'correct horse battery')$$);
select try($$select auth.sign_up('bob@example.io', 'short')$$);
select try($$select auth.sign_up('bob@example.io', null)$$);
select try($$select auth.sign_up('bob@example.io', repeat('x', 257))$$);
select try($$select auth.sign_up('bob@example.io', 'correct horse battery', '[1, 2]')$$);
select try($$select auth.sign_up('bob@example.io', 'correct horse battery', '"text"')$$);
select try($$select auth.sign_in('bob@example.io', repeat('x', 1000000))$$);
select try($$select auth.sign_in('bob@example.io', null)$$);
select try($$select auth.sign_in(null, null)$$);
select count(*) as bob_rows from auth.users where email like 'bob%';
-- NULL metadata means {}.
select auth.sign_up('carol@example.io', 'correct horse battery', null) -> 'user' -> 'user_metadata' as carol_metadata;

-- A ban blocks sign-in with the right password only; the wrong one stays invalid_credentials.
update auth.users set banned_until = now() + interval '1 hour' where email = 'alice@example.io';
select try($$select auth.sign_in('alice@example.io', 'correct horse battery')$$);
select try($$select auth.sign_in('alice@example.io', 'wrong password!')$$);
update auth.users set banned_until = now() - interval '1 second' where email = 'alice@example.io';
select auth.sign_in('alice@example.io', 'correct horse battery') ->> 'token_type' as ban_expired;

-- Imported users: bcrypt from pgcrypto's crypt() or GoTrue signs in and is upgraded.
insert into auth.users (id, aud, role, email, encrypted_password, raw_app_meta_data, raw_user_meta_data, created_at, updated_at)
values (gen_random_uuid(), 'authenticated', 'authenticated', 'legacy@example.io',
        '$2a$10$BiUSASd9MtwZKzTdYcnlfeeaRL4l7DIioDNHhJox9KVcAuvrM2lZC', '{"provider": "email", "providers": ["email"]}', '{}', now(), now());
select try($$select auth.sign_in('legacy@example.io', 'wrong-password')$$);
select auth.sign_in('legacy@example.io', 'password123') ->> 'token_type' as legacy_signed_in;
select left(encrypted_password, 10) as upgraded_to from auth.users where email = 'legacy@example.io';
select auth.sign_in('legacy@example.io', 'password123') ->> 'token_type' as legacy_again;
rollback;
