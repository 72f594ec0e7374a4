-- auth_ext 0.5.0 -> 0.6.0: the extension side of a GoTrue-compatible HTTP server: the API
-- gateway's key check (auth.authenticate_request), GoTrue's /settings (auth.settings), and
-- PKCE for the email links (auth.flow_state, code_challenge parameters, auth.verify_link,
-- auth.exchange_code_for_session).
\echo Use "ALTER EXTENSION auth_ext UPDATE TO '0.6.0'" to load this file. \quit

-- Rust functions new in this version.
CREATE FUNCTION auth."authenticate_request"(
	"apikey" TEXT, /* Option < & str > */
	"bearer" TEXT /* Option < & str > */
) RETURNS jsonb /* pgrx :: JsonB */
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'authenticate_request_wrapper';

CREATE FUNCTION auth."_pkce_verifier_matches"(
	"method" TEXT, /* & str */
	"challenge" TEXT, /* & str */
	"verifier" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_pkce_verifier_matches_wrapper';

CREATE FUNCTION auth."_attempt_begin_named"(
	"name" TEXT /* & str */
) RETURNS void
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_attempt_begin_named_wrapper';

CREATE FUNCTION auth."_flow_state_failed"(
	"flow_id" uuid, /* pgrx :: Uuid */
	"user_id" uuid /* Option < pgrx :: Uuid > */
) RETURNS void
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_flow_state_failed_wrapper';

CREATE FUNCTION auth."_sign_up_with_flow"(
	"email" TEXT, /* Option < & str > */
	"password" TEXT, /* Option < & str > */
	"data" TEXT, /* Option < & str > */
	"redirect_to" TEXT, /* Option < & str > */
	"pkce" TEXT /* Option < & str > */
) RETURNS jsonb /* pgrx :: JsonB */
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_sign_up_with_flow_wrapper';

-- PKCE (RFC 7636) flows of the email links, as Supabase keeps them: a flow state is made
-- when a link is sent with a code_challenge, gets an auth code when the link is opened
-- (auth.verify_link), and is deleted when the code is exchanged for a session
-- (auth.exchange_code_for_session) or refused. Supabase's columns; two deliberate
-- differences: auth_code holds the SHA-256 (hex) of the code, never the code (as
-- refresh_tokens.token does), and is '' until a code is issued; user_id references the
-- user (on delete cascade), where Supabase's has no foreign key.
create type auth.code_challenge_method as enum ('s256', 'plain');

create table auth.flow_state (
  id uuid not null primary key,
  user_id uuid references auth.users (id) on delete cascade,
  auth_code text not null,
  code_challenge_method auth.code_challenge_method not null,
  code_challenge text not null,
  provider_type text not null,
  provider_access_token text,
  provider_refresh_token text,
  created_at timestamptz,
  updated_at timestamptz,
  authentication_method text not null,
  auth_code_issued_at timestamptz
);
comment on table auth.flow_state is 'stores metadata for pkce logins';
create index idx_auth_code on auth.flow_state (auth_code);
create index idx_user_id_auth_method on auth.flow_state (user_id, authentication_method);
create index flow_state_created_at_idx on auth.flow_state (created_at desc);
revoke all on auth.flow_state from public;
select pg_catalog.pg_extension_config_dump('auth.flow_state', '');

-- Functions whose signature changes (new trailing code_challenge parameters, or the PKCE
-- flow passed along): dropped and made again, since an overload beside the old one would
-- make every old call ambiguous. The library keeps _sign_up_with_redirect's symbol for
-- databases not yet updated; no SQL function is made for it any more.
drop function auth.sign_up(text, text, jsonb, text);
drop function auth.recover(text, text);
drop function auth.sign_in_with_otp(text, boolean, jsonb, text);
drop function auth.resend(text, text, text);
drop function auth._confirm_sign_up(uuid, text);
drop function auth._repeated_sign_up(text, text, jsonb, text);
drop function auth._sign_up_with_redirect(text, text, text, text);

-- New and remade SQL functions.
create function auth._pkce_flow(code_challenge text, code_challenge_method text) returns jsonb
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  challenge text := nullif(code_challenge, '');
  method text := pg_catalog.lower(nullif(code_challenge_method, ''));
begin
  if challenge is null and method is null then
    return null;
  end if;
  if challenge is null or method is null then
    raise exception 'validation_failed: PKCE flow requires code_challenge_method and code_challenge'
      using errcode = '22023';
  end if;
  if method not in ('s256', 'plain') then
    raise exception 'validation_failed: unsupported code_challenge method "%"', pg_catalog.left(code_challenge_method, 32)
      using errcode = '22023';
  end if;
  if pg_catalog.length(challenge) not between 43 and 128 then
    raise exception 'validation_failed: code challenge has to be between 43 and 128 characters'
      using errcode = '22023';
  end if;
  if challenge !~ '^[A-Za-z0-9._~-]+$' then
    raise exception 'validation_failed: code challenge can only contain alphanumeric characters, hyphens, periods, underscores and tildes'
      using errcode = '22023';
  end if;
  return pg_catalog.jsonb_build_object('code_challenge', challenge, 'code_challenge_method', method);
end
$$;

create function auth._with_pkce(s jsonb, pkce jsonb) returns jsonb
language sql immutable parallel safe
return case when pkce is null then s else s || pg_catalog.jsonb_build_object('pkce', pkce) end;

create function auth._new_flow_state(uid uuid, action text, pkce jsonb) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  method text := case action when 'signup' then 'email/signup' else action end;
begin
  delete from auth.flow_state f
   where f.user_id = uid and f.authentication_method = method and f.auth_code_issued_at is null;
  insert into auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge, provider_type,
                               created_at, updated_at, authentication_method)
  values (pg_catalog.gen_random_uuid(), uid, '', (pkce ->> 'code_challenge_method')::auth.code_challenge_method,
          pkce ->> 'code_challenge', 'email', pg_catalog.now(), pg_catalog.now(), method);
end
$$;

create or replace function auth._issue_otp(uid uuid, action text, address text, s jsonb) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  kind text := case action
    when 'signup' then 'confirmation_token' when 'recovery' then 'recovery_token'
    when 'magiclink' then 'magiclink_token' when 'email_change' then 'email_change_token_new'
    when 'invite' then 'invite_token' end;
  t text[] := auth._new_otp();
  tid uuid := pg_catalog.gen_random_uuid();
  link text := t[1];
  u auth.users;
begin
  if s ? 'pkce' then
    perform auth._new_flow_state(uid, action, s -> 'pkce');
    link := 'pkce_' || t[1];
  end if;
  insert into auth.one_time_tokens as o (id, user_id, token_type, token_hash, code_hash, relates_to, created_at, expires_at)
  values (tid, uid, kind, auth._otp_hash(t[1]), auth._otp_hash(tid::text || ':' || t[2]), address,
          pg_catalog.now(), pg_catalog.now() + pg_catalog.make_interval(secs => (s ->> 'otp_expiry')::integer))
  on conflict on constraint one_time_tokens_user_id_token_type_key do update
     set id = excluded.id, token_hash = excluded.token_hash, code_hash = excluded.code_hash,
         relates_to = excluded.relates_to, created_at = excluded.created_at, expires_at = excluded.expires_at;
  update auth.users x
     set confirmation_sent_at = case when action = 'signup' then pg_catalog.now() else x.confirmation_sent_at end,
         recovery_sent_at = case when action in ('recovery', 'magiclink') then pg_catalog.now() else x.recovery_sent_at end,
         email_change_sent_at = case when action = 'email_change' then pg_catalog.now() else x.email_change_sent_at end,
         email_change = case when action = 'email_change' then address else x.email_change end,
         invited_at = case when action = 'invite' then coalesce(x.invited_at, pg_catalog.now()) else x.invited_at end
   where x.id = uid
  returning * into u;
  return pg_catalog.jsonb_build_object(
    'user', auth._user_json(u),
    'email_data', pg_catalog.jsonb_build_object(
      'token', t[2],
      'token_hash', link,
      'redirect_to', s ->> 'redirect_to',
      'email_action_type', action,
      'site_url', s ->> 'site_url',
      'token_new', '',
      'token_hash_new', ''));
end
$$;

create function auth._confirm_sign_up(uid uuid, redirect_to text, pkce jsonb) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  s jsonb := auth._with_pkce(auth._flow_settings(redirect_to), pkce);
  u auth.users;
begin
  select * into strict u from auth.users x where x.id = uid;
  perform auth._count_email_send(u.email, s);
  perform auth._send_otp(uid, 'signup', u.email, s);
  perform auth._audit('user_signedup', uid, '{"provider": "email", "confirmation": "sent"}');
  select * into strict u from auth.users x where x.id = uid;
  return auth._user_json(u);
end
$$;

create function auth._repeated_sign_up(address text, hash text, metadata jsonb, redirect_to text, pkce jsonb)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  s jsonb := auth._with_pkce(auth._flow_settings(redirect_to), pkce);
  u auth.users;
  decoy uuid;
begin
  perform auth._count_email_send(address, s);
  select * into u from auth.users x
   where pg_catalog.lower(x.email) = address and not x.is_sso_user
   for update;
  if found and u.email_confirmed_at is null and u.deleted_at is null then
    update auth.users x
       set encrypted_password = hash, raw_user_meta_data = metadata, updated_at = pg_catalog.now()
     where x.id = u.id;
    perform auth._send_otp(u.id, 'signup', address, s);
    perform auth._audit('user_repeated_signup', u.id, '{"provider": "email", "confirmation": "sent"}');
  else
    if found then
      perform auth._audit('user_repeated_signup', u.id, '{"provider": "email", "confirmation": "not sent"}');
    end if;
    -- A new sign-up sends a confirmation: so does a decoy here, in the same time.
    perform auth._send_or_decoy(null, 'signup', address, s, 'user_signedup', '{"provider": "email"}');
  end if;
  -- Whatever the address's state, the answer is a new user's: a random id, fresh times, an
  -- email identity (the real user's id, or GoTrue's empty identities, would tell who has an
  -- account).
  decoy := pg_catalog.gen_random_uuid();
  return pg_catalog.jsonb_build_object(
    'id', decoy, 'aud', 'authenticated', 'role', 'authenticated',
    'email', address, 'email_confirmed_at', null, 'phone', '', 'phone_confirmed_at', null,
    'confirmation_sent_at', auth._iso(pg_catalog.now()), 'confirmed_at', null, 'last_sign_in_at', null,
    'app_metadata', '{"provider": "email", "providers": ["email"]}'::jsonb,
    'user_metadata', metadata,
    'identities', pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
      'identity_id', pg_catalog.gen_random_uuid(), 'id', decoy::text, 'user_id', decoy,
      'identity_data', pg_catalog.jsonb_build_object('sub', decoy::text, 'email', address,
                                                     'email_verified', false, 'phone_verified', false),
      'provider', 'email', 'last_sign_in_at', auth._iso(pg_catalog.now()), 'created_at', auth._iso(pg_catalog.now()),
      'updated_at', auth._iso(pg_catalog.now()), 'email', address)),
    'created_at', auth._iso(pg_catalog.now()), 'updated_at', auth._iso(pg_catalog.now()),
    'is_anonymous', false);
end
$$;

create or replace function auth.update_user(attributes jsonb, redirect_to text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users := auth._current_user(false);
  bad text;
  merged jsonb;
  addr text;
  changed text[] := '{}';
  s jsonb;
  new_hash text;
  pkce jsonb;
begin
  if attributes is null or pg_catalog.jsonb_typeof(attributes) <> 'object' then
    raise exception 'validation_failed: attributes must be a JSON object (email, password, data)'
      using errcode = '22023';
  end if;
  select k into bad from pg_catalog.jsonb_object_keys(attributes) k
   where k not in ('email', 'password', 'data', 'code_challenge', 'code_challenge_method') limit 1;
  if found then
    raise exception 'validation_failed: unknown attribute "%" (email, password and data can be changed)',
      pg_catalog.left(bad, 64) using errcode = '22023';
  end if;
  pkce := auth._pkce_flow(attributes ->> 'code_challenge', attributes ->> 'code_challenge_method');
  if attributes ? 'password' then
    if pg_catalog.jsonb_typeof(attributes -> 'password') <> 'string' then
      raise exception 'validation_failed: password must be a string' using errcode = '22023';
    end if;
    -- same_password, the policy, the new hash (src/users.rs), before the user's row is
    -- locked: a hash may wait for a place (src/hashing.rs), and must not wait holding it.
    new_hash := auth._new_password_hash(u.id, attributes ->> 'password');
  end if;
  u := auth._current_user(true);
  if attributes ? 'data' then
    if pg_catalog.jsonb_typeof(attributes -> 'data') <> 'object' then
      raise exception 'validation_failed: data must be a JSON object' using errcode = '22023';
    end if;
    merged := auth._merge_metadata(u.raw_user_meta_data, attributes -> 'data');
    perform auth._check_data(merged, 'user metadata');
    update auth.users x set raw_user_meta_data = merged where x.id = u.id;
    changed := changed || 'data'::text;
  end if;
  if new_hash is not null then
    update auth.users x set encrypted_password = new_hash where x.id = u.id;
    -- As GoTrue does: a new password ends every other session of the user.
    delete from auth.sessions x where x.user_id = u.id and x.id is distinct from auth._claims_session_id();
    perform auth._audit('user_updated_password', u.id, '{"provider": "email"}');
    changed := changed || 'password'::text;
  end if;
  if attributes ? 'email' then
    if pg_catalog.jsonb_typeof(attributes -> 'email') <> 'string' then
      raise exception 'validation_failed: email must be a string' using errcode = '22023';
    end if;
    addr := auth._normalize_email(attributes ->> 'email');
    if addr is distinct from pg_catalog.lower(u.email) then
      s := auth._with_pkce(auth._flow_settings(redirect_to), pkce);
      perform auth._count_email_send(addr, s);
      if not exists (select from auth.users x
                      where pg_catalog.lower(x.email) = addr and not x.is_sso_user and x.id <> u.id) then
        perform auth._send_otp(u.id, 'email_change', addr, s);
      elsif (s ->> 'confirm')::boolean then
        -- With confirmation on, a taken address is answered like a free one, as sign-up
        -- answers it: the change is pending, but no message goes out, so it can never be
        -- confirmed. The real send's work is done and rolled back (its time, and a
        -- notification with an id like a real one's), then the pending state is left.
        begin
          perform auth._send_otp(u.id, 'email_change', addr, s - 'hook');
          raise exception using errcode = 'AUXDC';
        exception when sqlstate 'AUXDC' then
          null;
        end;
        delete from auth.one_time_tokens o where o.user_id = u.id and o.token_type = 'email_change_token_new';
        update auth.users x set email_change = addr, email_change_sent_at = pg_catalog.now() where x.id = u.id;
        if s ->> 'hook' is null then
          perform pg_catalog.pg_notify('auth_email', pg_catalog.currval('auth.email_outbox_id_seq')::text);
        end if;
      else
        raise exception 'email_exists: A user with this email address has already been registered'
          using errcode = '23505';
      end if;
      changed := changed || 'email'::text;
    end if;
  end if;
  update auth.users x set updated_at = pg_catalog.now() where x.id = u.id returning * into u;
  if pg_catalog.cardinality(changed) > 0 then
    perform auth._audit('user_modified', u.id, pg_catalog.jsonb_build_object('fields', changed));
  end if;
  return auth._user_json(u);
end
$$;
comment on function auth.update_user(jsonb, text) is
  'Change the signed-in user''s data, password or email (GoTrue''s PUT /user); returns the user object.';

create function auth.recover(email text, redirect_to text default null, code_challenge text default null,
                             code_challenge_method text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  addr text := auth._normalize_email(email);
  s jsonb := auth._with_pkce(auth._flow_settings(redirect_to), auth._pkce_flow(code_challenge, code_challenge_method));
  uid uuid;
begin
  perform auth._count_email_send(addr, s);
  select x.id into uid from auth.users x
   where pg_catalog.lower(x.email) = addr and not x.is_sso_user and x.deleted_at is null;
  -- The same answer, in the same time, for an unknown address.
  perform auth._send_or_decoy(uid, 'recovery', addr, s, 'user_recovery_requested', '{"provider": "email"}');
  return '{}'::jsonb;
end
$$;
comment on function auth.recover(text, text, text, text) is
  'Send a password-recovery link and code to the address if it has an account; the same answer either way.';

create function auth.sign_in_with_otp(email text, create_user boolean default true,
                                      data jsonb default null, redirect_to text default null,
                                      code_challenge text default null, code_challenge_method text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  addr text := auth._normalize_email(email);
  s jsonb := auth._with_pkce(auth._flow_settings(redirect_to), auth._pkce_flow(code_challenge, code_challenge_method));
  uid uuid;
begin
  perform auth._check_data(data, 'data');
  perform auth._count_email_send(addr, s);
  select x.id into uid from auth.users x
   where pg_catalog.lower(x.email) = addr and not x.is_sso_user and x.deleted_at is null;
  if not found then
    if not coalesce(create_user, true) then
      -- No account and none wanted: the same answer as a sent link, in the same time.
      perform auth._send_or_decoy(null, 'magiclink', addr, s, 'user_otp_requested', '{"provider": "email"}');
      return '{}'::jsonb;
    end if;
    -- In a subtransaction, like the decoy an address with an account gets (which rolls
    -- back): the same shape of work, so the two take the same time.
    begin
      insert into auth.users (instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data,
                              raw_user_meta_data, is_super_admin, created_at, updated_at, is_anonymous)
      values ('00000000-0000-0000-0000-000000000000', pg_catalog.gen_random_uuid(), 'authenticated',
              'authenticated', addr, '', '{"provider": "email", "providers": ["email"]}',
              coalesce(data, '{}'), false, pg_catalog.now(), pg_catalog.now(), false)
      on conflict do nothing
      returning id into uid;
      if uid is null then
        -- A concurrent call created it first.
        select x.id into strict uid from auth.users x where pg_catalog.lower(x.email) = addr and not x.is_sso_user;
      else
        insert into auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
        values (uid::text, uid, pg_catalog.jsonb_build_object('sub', uid::text, 'email', addr,
                'email_verified', false, 'phone_verified', false), 'email', pg_catalog.now(), pg_catalog.now());
        perform auth._audit('user_signedup', uid, '{"provider": "email", "via": "otp"}');
      end if;
    exception when sqlstate 'AUXDC' then
      null;
    end;
  elsif coalesce(create_user, true) then
    perform auth._creation_decoy();
  end if;
  perform auth._send_or_decoy(uid, 'magiclink', addr, s, 'user_otp_requested', '{"provider": "email"}');
  return '{}'::jsonb;
end
$$;
comment on function auth.sign_in_with_otp(text, boolean, jsonb, text, text, text) is
  'Passwordless sign-in: send a magic link and a six-digit code (creating the user unless create_user is false).';

create function auth.resend(type text, email text, redirect_to text default null, code_challenge text default null,
                            code_challenge_method text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  addr text := auth._normalize_email(email);
  s jsonb;
  uid uuid;
begin
  if type is null or type not in ('signup', 'email_change') then
    raise exception 'validation_failed: type must be signup or email_change' using errcode = '22023';
  end if;
  s := auth._with_pkce(auth._flow_settings(redirect_to), auth._pkce_flow(code_challenge, code_challenge_method));
  perform auth._count_email_send(addr, s);
  if type = 'signup' then
    select x.id into uid from auth.users x
     where pg_catalog.lower(x.email) = addr and not x.is_sso_user and x.deleted_at is null
       and x.email_confirmed_at is null;
  else
    -- Through the pending token (indexed by address), not a scan of users.email_change.
    select x.id into uid from auth.one_time_tokens o join auth.users x on x.id = o.user_id
     where o.relates_to = addr and o.token_type = 'email_change_token_new'
       and x.email_change = addr and x.deleted_at is null;
  end if;
  -- The same answer, in the same time, when there is nothing to send.
  perform auth._send_or_decoy(uid, type, addr, s, 'user_confirmation_requested',
                              pg_catalog.jsonb_build_object('type', type));
  return '{}'::jsonb;
end
$$;
comment on function auth.resend(text, text, text, text, text) is
  'Send a pending sign-up confirmation or email-change confirmation again.';

create function auth._consume_otp(email text, token text, type text) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  kinds text[] := case type
    when 'signup' then '{confirmation_token}' when 'invite' then '{invite_token}'
    when 'magiclink' then '{magiclink_token}' when 'recovery' then '{recovery_token}'
    when 'email_change' then '{email_change_token_new}'
    when 'email' then '{confirmation_token,magiclink_token,invite_token}' end;
  addr text;
  h text;
  o auth.one_time_tokens;
  u auth.users;
  method text;
begin
  if kinds is null then
    raise exception 'validation_failed: type must be signup, invite, magiclink, recovery, email_change or email'
      using errcode = '22023';
  end if;
  if token is null or token = '' or pg_catalog.length(token) > 256 then
    raise exception 'validation_failed: a token is required' using errcode = '22023';
  end if;
  -- The prefix only says which flow the link belongs to (auth.verify_link); the token is
  -- what follows it.
  if pg_catalog.starts_with(token, 'pkce_') then
    token := pg_catalog.substr(token, 6);
  end if;
  if email is not null then
    addr := auth._normalize_email(email);
  end if;
  -- Counted before the token is looked at (src/lockout.rs): refused here when the address
  -- or the client is locked, or when the checks in flight would reach the threshold.
  perform auth._attempt_begin(addr);
  h := auth._otp_hash(token);
  -- Locked: two calls with the same token cannot both use it.
  select * into o from auth.one_time_tokens t
   where t.token_type = any (kinds)
     and (t.token_hash = h
          or (addr is not null and t.relates_to = addr
              and t.code_hash = auth._otp_hash(t.id::text || ':' || token)))
     and (addr is null or t.relates_to = addr)
   order by t.created_at desc
   limit 1
   for update;
  if not found or o.expires_at <= pg_catalog.now() then
    -- Written down (in a transaction of its own) toward the lockout, like a wrong password.
    perform auth._attempt_failed(addr, o.user_id, type);
    raise exception 'otp_expired: Token has expired or is invalid'
      using errcode = '28000', hint = 'Ask for a new link or code.';
  end if;
  delete from auth.one_time_tokens t where t.id = o.id;
  perform auth._attempt_succeeded();
  select * into u from auth.users x where x.id = o.user_id and x.deleted_at is null for update;
  if not found then
    raise exception 'otp_expired: Token has expired or is invalid' using errcode = '28000';
  end if;
  if u.banned_until > pg_catalog.now() then
    raise exception 'user_banned: User is banned' using errcode = '28000';
  end if;
  if o.token_type = 'email_change_token_new' then
    begin
      update auth.users x
         set email = o.relates_to, email_change = '', email_change_sent_at = null,
             email_confirmed_at = pg_catalog.now(), is_anonymous = false
       where x.id = u.id;
    exception when unique_violation then
      raise exception 'email_exists: A user with this email address has already been registered'
        using errcode = '23505';
    end;
    -- A user without an email identity (anonymous, or from an ID token) gains one.
    perform auth._ensure_email_identity(u.id, true);
  else
    update auth.users x
       set email_confirmed_at = coalesce(x.email_confirmed_at, pg_catalog.now())
     where x.id = u.id;
    update auth.identities i
       set identity_data = i.identity_data || '{"email_verified": true}'
     where i.user_id = u.id and i.provider = 'email' and i.identity_data ->> 'email_verified' is distinct from 'true';
  end if;
  update auth.users x set last_sign_in_at = pg_catalog.now(), updated_at = pg_catalog.now() where x.id = u.id;
  update auth.identities i set last_sign_in_at = pg_catalog.now() where i.user_id = u.id and i.provider = 'email';
  -- Proof of the address clears its failed attempts, as a successful sign-in does.
  delete from auth.sign_in_failures f where f.key = 'email:' || coalesce(addr, o.relates_to);
  method := case
    when type = 'email' then 'otp'
    when o.token_type = 'confirmation_token' then 'email/signup'
    when o.token_type = 'invite_token' then 'invite'
    when o.token_type = 'magiclink_token' then 'magiclink'
    when o.token_type = 'recovery_token' then 'recovery'
    else 'email_change' end;
  return pg_catalog.jsonb_build_object(
    'user_id', u.id,
    'method', method,
    'audit', case o.token_type
      when 'confirmation_token' then 'user_signedup' when 'invite_token' then 'invite_accepted'
      when 'email_change_token_new' then 'user_modified' else 'login' end);
end
$$;

create or replace function auth.verify_otp(email text, token text, type text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  v jsonb := auth._consume_otp(email, token, type);
  uid uuid := (v ->> 'user_id')::uuid;
  session jsonb;
begin
  session := auth._start_session(uid, v ->> 'method');
  perform auth._audit(v ->> 'audit', uid, pg_catalog.jsonb_build_object('provider', 'email', 'method', v ->> 'method'));
  return session;
end
$$;
comment on function auth.verify_otp(text, text, text) is
  'Verify a link token or six-digit code (signup, invite, magiclink, recovery, email_change, email); returns a session.';

create function auth._error_json(state text, message text) returns jsonb
language sql immutable parallel safe
return case
  when message ~ '^[a-z][a-z0-9_]*: ' then
    pg_catalog.jsonb_build_object('code', pg_catalog.split_part(message, ':', 1),
                                  'message', pg_catalog.substr(message, pg_catalog.strpos(message, ': ') + 2),
                                  'sqlstate', state)
  else pg_catalog.jsonb_build_object('code', 'unexpected_failure', 'message', message, 'sqlstate', state) end;

create function auth.verify_link(token text, type text, redirect_to text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  target text := auth._flow_settings(redirect_to) ->> 'redirect_to';
  pkce boolean := pg_catalog.starts_with(coalesce(token, ''), 'pkce_');
  v jsonb;
  uid uuid;
  flow uuid;
  code text;
  answer jsonb;
  err_state text;
  err_text text;
begin
  begin
    if type is null or type not in ('signup', 'invite', 'magiclink', 'recovery', 'email_change') then
      raise exception 'validation_failed: type must be signup, invite, magiclink, recovery or email_change'
        using errcode = '22023';
    end if;
    v := auth._consume_otp(null, token, type);
    uid := (v ->> 'user_id')::uuid;
    if pkce then
      -- The newest flow of this purpose whose code is not issued yet (GoTrue takes the
      -- user's newest flow state of the method).
      select f.id into flow from auth.flow_state f
       where f.user_id = uid and f.authentication_method = v ->> 'method' and f.auth_code_issued_at is null
       order by f.created_at desc
       limit 1
       for update;
      if not found then
        raise exception 'flow_state_not_found: No associated flow state found'
          using errcode = 'P0002', hint = 'Start the sign-in again with a code_challenge.';
      end if;
      -- 256 random bits; only their SHA-256 is kept, as refresh tokens are.
      code := auth._random_secret();
      update auth.flow_state f
         set auth_code = auth._sha256_hex(code), auth_code_issued_at = pg_catalog.now(), updated_at = pg_catalog.now()
       where f.id = flow;
      answer := pg_catalog.jsonb_build_object('code', code);
    else
      answer := pg_catalog.jsonb_build_object('session', auth._start_session(uid, v ->> 'method'));
    end if;
    perform auth._audit(v ->> 'audit', uid, pg_catalog.jsonb_build_object('provider', 'email', 'method', v ->> 'method')
                                            || case when pkce then '{"flow": "pkce"}'::jsonb else '{}'::jsonb end);
  exception
    when serialization_failure or deadlock_detected then
      raise;
    when others then
      get stacked diagnostics err_state = returned_sqlstate, err_text = message_text;
      return pg_catalog.jsonb_build_object('redirect_to', target, 'error', auth._error_json(err_state, err_text));
  end;
  return pg_catalog.jsonb_build_object('redirect_to', target) || answer;
end
$$;
comment on function auth.verify_link(text, text, text) is
  'Open an email link (GoTrue''s GET /verify): {redirect_to, session}, {redirect_to, code} for a PKCE flow, or {redirect_to, error}; never raises for a bad link.';

create function auth.exchange_code_for_session(auth_code text, code_verifier text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  f auth.flow_state;
  u auth.users;
  session jsonb;
begin
  if exchange_code_for_session.auth_code is null or exchange_code_for_session.auth_code = ''
     or code_verifier is null or code_verifier = '' then
    raise exception 'validation_failed: invalid request: both auth code and code verifier should be non-empty'
      using errcode = '22023';
  end if;
  if pg_catalog.length(exchange_code_for_session.auth_code) > 256 or pg_catalog.length(code_verifier) > 1024 then
    raise exception 'validation_failed: the auth code or the code verifier is too long' using errcode = '22023';
  end if;
  -- Only the code's hash is stored: a copy of the table (or a plain challenge read from it)
  -- exchanges nothing.
  select * into f from auth.flow_state x
   where x.auth_code = auth._sha256_hex(exchange_code_for_session.auth_code) and x.auth_code_issued_at is not null;
  if not found or f.user_id is null then
    raise exception 'flow_state_not_found: invalid flow state, no valid flow state found'
      using errcode = 'P0002', hint = 'Open the email link again, or start the sign-in again.';
  end if;
  if f.auth_code_issued_at + interval '5 minutes' <= pg_catalog.now() then
    raise exception 'flow_state_expired: invalid flow state, flow state has expired'
      using errcode = '28000', hint = 'Start the sign-in again.';
  end if;
  -- Counted before the verifier is checked (src/lockout.rs), on the flow state and the
  -- client address.
  perform auth._attempt_begin_named('pkce:' || f.id::text);
  if not auth._pkce_verifier_matches(f.code_challenge_method::text, f.code_challenge, code_verifier) then
    -- Counted, audited and the flow state deleted, in a transaction of its own (src/pkce.rs).
    perform auth._flow_state_failed(f.id, f.user_id);
    raise exception 'bad_code_verifier: code challenge does not match previously saved code verifier'
      using errcode = '28000', hint = 'Start the sign-in again.';
  end if;
  perform auth._attempt_succeeded();
  -- The delete decides between concurrent exchanges: the second waits for the first and
  -- then finds no row.
  delete from auth.flow_state x where x.id = f.id;
  if not found then
    raise exception 'flow_state_not_found: invalid flow state, no valid flow state found'
      using errcode = 'P0002', hint = 'Open the email link again, or start the sign-in again.';
  end if;
  select * into u from auth.users x where x.id = f.user_id and x.deleted_at is null for update;
  if not found then
    raise exception 'user_not_found: User not found' using errcode = '28000';
  end if;
  if u.banned_until > pg_catalog.now() then
    raise exception 'user_banned: User is banned' using errcode = '28000';
  end if;
  update auth.users x set last_sign_in_at = pg_catalog.now(), updated_at = pg_catalog.now() where x.id = u.id;
  session := auth._start_session(u.id, f.authentication_method);
  perform auth._audit('login', u.id, pg_catalog.jsonb_build_object(
    'provider_type', f.provider_type, 'method', f.authentication_method, 'grant_type', 'pkce'));
  return session;
end
$$;
comment on function auth.exchange_code_for_session(text, text) is
  'Trade an auth code and its PKCE verifier for a session (GoTrue''s grant_type=pkce); the code works once.';

create or replace function auth.admin_delete_user(id uuid, should_soft_delete boolean default false) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users := auth._admin_user(id, true);
  before jsonb := auth._user_json(u);
begin
  if coalesce(should_soft_delete, false) then
    -- The row stays (rows of the application that reference it survive); everything that
    -- identifies or authenticates the person goes, and the address is free again.
    delete from auth.sessions s where s.user_id = u.id;
    delete from auth.identities i where i.user_id = u.id;
    delete from auth.one_time_tokens o where o.user_id = u.id;
    delete from auth.flow_state f where f.user_id = u.id;
    update auth.users x
       set deleted_at = pg_catalog.now(), email = null, phone = null, encrypted_password = '',
           email_change = '', raw_user_meta_data = '{}', raw_app_meta_data = '{}', updated_at = pg_catalog.now()
     where x.id = u.id;
  else
    delete from auth.users x where x.id = u.id;
  end if;
  perform auth._audit_user_admin('user_deleted', u,
    pg_catalog.jsonb_build_object('soft', coalesce(should_soft_delete, false)));
  return before;
end
$$;
comment on function auth.admin_delete_user(uuid, boolean) is
  'Admin: delete a user, or with should_soft_delete keep the row and erase what identifies the person.';

create function auth.sign_up(email text, password text, data jsonb default '{}'::jsonb,
                             redirect_to text default null, code_challenge text default null,
                             code_challenge_method text default null)
returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
return auth._sign_up_with_flow(email, password, data::text, redirect_to,
                               auth._pkce_flow(code_challenge, code_challenge_method)::text);
comment on function auth.sign_up(text, text, jsonb, text, text, text) is
  'Create a user with email and password; returns a session object like GoTrue''s /signup (the user object alone when auth.require_email_confirmation is on).';

create or replace function auth._autonomous(job jsonb) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if job ? 'revoke_session' then
    update auth.sessions
       set not_after = pg_catalog.now(), updated_at = pg_catalog.now()
     where id = (job ->> 'revoke_session')::uuid;
    update auth.refresh_tokens
       set revoked = true, updated_at = pg_catalog.now()
     where session_id = (job ->> 'revoke_session')::uuid and not revoked;
  end if;
  if job ? 'count_failures' then
    insert into auth.sign_in_failures (key, failed_at)
    select k, pg_catalog.now()
      from pg_catalog.jsonb_array_elements_text(job -> 'count_failures' -> 'keys') k;
  end if;
  if job ? 'delete_flow_state' then
    delete from auth.flow_state where id = (job ->> 'delete_flow_state')::uuid;
  end if;
  if job ? 'audit' then
    insert into auth.audit_log_entries (instance_id, id, payload, created_at, ip_address)
    values ('00000000-0000-0000-0000-000000000000', pg_catalog.gen_random_uuid(),
            (job -> 'audit' -> 'payload')::pg_catalog.json, pg_catalog.now(),
            coalesce(job -> 'audit' ->> 'ip', ''));
  end if;
end
$$;

create or replace function auth.cleanup(batch_size integer default 1000) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  n_sessions bigint;
  n_tokens bigint;
  n_otps bigint;
  n_outbox bigint;
  n_flows bigint;
begin
  if batch_size is null or batch_size < 1 or batch_size > 100000 then
    raise exception 'validation_failed: batch_size must be between 1 and 100000'
      using errcode = '22023';
  end if;
  -- Each batch is chosen once, in a materialized CTE: as the subquery of an IN, a plan
  -- may run the LIMIT again for every row it compares and delete more than the batch.
  with batch as materialized (
    select s.id from auth.sessions s where not auth._session_is_live(s.id)
     limit batch_size for update skip locked)
  delete from auth.sessions d using batch b where d.id = b.id;
  get diagnostics n_sessions = row_count;
  with batch as materialized (
    select t.id from auth.refresh_tokens t
     where t.revoked and t.updated_at < pg_catalog.now() - auth._seconds('auth.revoked_token_retention')
     limit batch_size for update skip locked)
  delete from auth.refresh_tokens d using batch b where d.id = b.id;
  get diagnostics n_tokens = row_count;
  delete from auth.sign_in_failures f
   where f.failed_at < pg_catalog.now() - auth._seconds('auth.lockout_window');
  delete from auth.rate_limits r
   where r.window_start < pg_catalog.now() - auth._seconds('auth.email_rate_window');
  -- Expired one-time tokens, and outbox messages whose tokens have expired.
  with batch as materialized (
    select o.id from auth.one_time_tokens o where o.expires_at < pg_catalog.now()
     limit batch_size for update skip locked)
  delete from auth.one_time_tokens d using batch b where d.id = b.id;
  get diagnostics n_otps = row_count;
  with batch as materialized (
    select m.id from auth.email_outbox m
     where m.created_at < pg_catalog.now() - auth._seconds('auth.otp_expiry')
     limit batch_size for update skip locked)
  delete from auth.email_outbox d using batch b where d.id = b.id;
  get diagnostics n_outbox = row_count;
  -- PKCE flow states whose code has expired, or whose link has (no code was issued).
  with batch as materialized (
    select f.id from auth.flow_state f
     where f.auth_code_issued_at < pg_catalog.now() - interval '5 minutes'
        or (f.auth_code_issued_at is null and f.created_at < pg_catalog.now() - auth._seconds('auth.otp_expiry'))
     limit batch_size for update skip locked)
  delete from auth.flow_state d using batch b where d.id = b.id;
  get diagnostics n_flows = row_count;
  return jsonb_build_object('sessions', n_sessions, 'refresh_tokens', n_tokens,
                            'one_time_tokens', n_otps, 'email_outbox', n_outbox, 'flow_state', n_flows);
end
$$;
comment on function auth.cleanup(integer) is
  'Delete ended sessions, refresh tokens revoked longer than auth.revoked_token_retention, expired one-time tokens, outbox messages and PKCE flow states, in batches.';

create function auth.settings() returns jsonb
language sql stable security definer
set search_path = pg_catalog, pg_temp
begin atomic
  select pg_catalog.jsonb_build_object(
    'external', pg_catalog.jsonb_build_object(
      'anonymous_users', (s.v ->> 'anonymous_sign_ins')::boolean,
      'apple', exists (select from auth.trusted_issuers t where t.issuer = 'https://appleid.apple.com'),
      'azure', false, 'bitbucket', false, 'discord', false, 'facebook', false, 'figma', false,
      'fly', false, 'github', false, 'gitlab', false,
      'google', exists (select from auth.trusted_issuers t where t.issuer = 'https://accounts.google.com'),
      'kakao', false, 'keycloak', false, 'linkedin', false, 'linkedin_oidc', false, 'notion', false,
      'slack', false, 'slack_oidc', false, 'spotify', false, 'twitch', false, 'twitter', false,
      'workos', false, 'zoom', false, 'email', true, 'phone', false),
    'disable_signup', false,
    'mailer_autoconfirm', not (s.v ->> 'confirm')::boolean,
    'phone_autoconfirm', false,
    'sms_provider', '',
    'saml_enabled', false)
  from (select auth._flow_settings(null) as v) s;
end;
comment on function auth.settings() is
  'The settings clients read from GoTrue''s GET /settings: enabled providers, autoconfirm, sign-up.';

-- Privileges as a fresh install has them: nothing for PUBLIC, then by name.
revoke all on function auth._pkce_verifier_matches(text, text, text), auth._attempt_begin_named(text),
  auth._flow_state_failed(uuid, uuid), auth._sign_up_with_flow(text, text, text, text, text),
  auth._pkce_flow(text, text), auth._with_pkce(jsonb, jsonb), auth._new_flow_state(uuid, text, jsonb),
  auth._confirm_sign_up(uuid, text, jsonb), auth._repeated_sign_up(text, text, jsonb, text, jsonb),
  auth._consume_otp(text, text, text), auth._error_json(text, text),
  auth.sign_up(text, text, jsonb, text, text, text), auth.recover(text, text, text, text),
  auth.sign_in_with_otp(text, boolean, jsonb, text, text, text), auth.resend(text, text, text, text, text),
  auth.verify_link(text, text, text), auth.exchange_code_for_session(text, text), auth.settings(),
  auth.authenticate_request(text, text)
  from public;
grant execute on function auth.sign_up(text, text, jsonb, text, text, text), auth.recover(text, text, text, text),
  auth.sign_in_with_otp(text, boolean, jsonb, text, text, text), auth.resend(text, text, text, text, text),
  auth.verify_link(text, text, text), auth.exchange_code_for_session(text, text), auth.settings()
  to anon, authenticated, service_role;
grant execute on function auth.authenticate_request(text, text) to public;
