-- auth_ext 0.3.0 -> 0.4.0: account flows (auth.user, auth.update_user, sign-up
-- confirmation, recovery, magic links and codes, email change, the delivery hook), the
-- admin API, anonymous and ID-token sign-in, and the custom access token hook.
\echo Use "ALTER EXTENSION auth_ext UPDATE TO '0.4.0'" to load this file. \quit

-- Rust functions new in this version (sign-up with redirect_to is a new one: the old
-- _sign_up keeps its signature for databases not yet updated).
CREATE FUNCTION auth."_flow_settings"(
  "redirect" TEXT
) RETURNS jsonb
STABLE
LANGUAGE c
AS 'MODULE_PATHNAME', '_flow_settings_wrapper';

CREATE FUNCTION auth."_new_otp"() RETURNS TEXT[]
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_new_otp_wrapper';

CREATE FUNCTION auth."_normalize_email"(
  "email" TEXT
) RETURNS TEXT
IMMUTABLE PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_normalize_email_wrapper';

CREATE FUNCTION auth."_hash_password"(
  "password" TEXT
) RETURNS TEXT
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_hash_password_wrapper';

CREATE FUNCTION auth."_start_session"(
  "user_id" uuid,
  "method" TEXT
) RETURNS jsonb
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_start_session_wrapper';

CREATE FUNCTION auth."_locked_out"(
  "email" TEXT
) RETURNS bool
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_locked_out_wrapper';

CREATE FUNCTION auth."_otp_failed"(
  "email" TEXT,
  "user_id" uuid,
  "otp_type" TEXT
) RETURNS void
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_otp_failed_wrapper';

CREATE FUNCTION auth."_client_ip"() RETURNS TEXT
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_client_ip_wrapper';

CREATE FUNCTION auth."_verify_id_token"(
  "token" TEXT
) RETURNS jsonb
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_verify_id_token_wrapper';

CREATE FUNCTION auth."_hook_timer"(
  "ms" INT
) RETURNS bigint
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_hook_timer_wrapper';

CREATE FUNCTION auth."_hook_timer_restore"(
  "previous" bigint
) RETURNS void
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_hook_timer_restore_wrapper';

drop function auth.sign_up(text, text, jsonb);
CREATE FUNCTION auth."_sign_up_with_redirect"(
  "email" TEXT,
  "password" TEXT,
  "data" TEXT,
  "redirect_to" TEXT
) RETURNS jsonb
VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', '_sign_up_with_redirect_wrapper';

-- One-time tokens of the account flows (sign-up confirmation, recovery, magic link, email
-- change, invitation), one per user and purpose: a new one replaces the old. Only hashes
-- are kept: token_hash is the SHA-256 of the link token (256 random bits), code_hash the
-- SHA-256 of "<id>:<six-digit code>". relates_to is the address the message went to.
-- (Supabase's table of the same name keeps one hash, of the email and the code.)
create table auth.one_time_tokens (
  id uuid not null primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  token_type text not null,
  token_hash text not null,
  code_hash text not null,
  relates_to text not null,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  constraint one_time_tokens_token_type_check check (token_type in (
    'confirmation_token', 'recovery_token', 'magiclink_token', 'email_change_token_new', 'invite_token')),
  constraint one_time_tokens_token_hash_check check (length(token_hash) = 64 and length(code_hash) = 64),
  constraint one_time_tokens_user_id_token_type_key unique (user_id, token_type)
);
comment on table auth.one_time_tokens is 'auth_ext: hashes of pending confirmation, recovery, magic-link, email-change and invite tokens. Owner only.';
create index one_time_tokens_token_hash_idx on auth.one_time_tokens using hash (token_hash);
create index one_time_tokens_relates_to_idx on auth.one_time_tokens using hash (relates_to);

-- Messages for the mailer when no delivery hook is set (auth.hook_send_email): the only
-- place a one-time token exists in plain text. service_role reads them and marks them
-- sent; each insert is announced with NOTIFY auth_email, '<id>'.
create table auth.email_outbox (
  id bigserial primary key,
  created_at timestamptz not null default now(),
  user_id uuid references auth.users (id) on delete cascade,
  recipient text not null,
  email_action_type text not null,
  message jsonb not null,
  sent_at timestamptz
);
comment on table auth.email_outbox is 'auth_ext: account-flow messages waiting for the mailer (they hold live tokens). service_role only.';
create index email_outbox_unsent_idx on auth.email_outbox (id) where sent_at is null;

-- Counters for rate limits other than the sign-in lockout (messages per address),
-- in fixed windows.
create table auth.rate_limits (
  key text not null primary key,
  window_start timestamptz not null,
  hits integer not null
);
comment on table auth.rate_limits is 'auth_ext: rate-limit counters (messages per address). Owner only.';

select pg_catalog.pg_extension_config_dump('auth.one_time_tokens', '');
select pg_catalog.pg_extension_config_dump('auth.email_outbox', '');
select pg_catalog.pg_extension_config_dump('auth.email_outbox_id_seq', '');

-- sql/flows.sql, as in a fresh install.
-- SHA-256 (hex) of a token: what auth.one_time_tokens stores.
create function auth._otp_hash(token text) returns text
language sql immutable parallel safe
return pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(token, 'UTF8')), 'hex');

-- Metadata merged as GoTrue merges it: top-level keys replaced, a null value removes one.
create function auth._merge_metadata(old jsonb, changes jsonb) returns jsonb
language sql immutable parallel safe
return (select coalesce(pg_catalog.jsonb_object_agg(e.key, e.value), '{}'::jsonb)
          from pg_catalog.jsonb_each(coalesce(old, '{}'::jsonb) || coalesce(changes, '{}'::jsonb)) e
         where e.value <> 'null'::jsonb);

-- app_metadata with `provider` among its providers (and as provider when it has none).
create function auth._add_provider(app jsonb, provider text) returns jsonb
language sql immutable parallel safe
return coalesce(app, '{}'::jsonb) || pg_catalog.jsonb_build_object(
  'provider', coalesce(app ->> 'provider', provider),
  'providers', (select pg_catalog.jsonb_agg(distinct p) from (
                  select pg_catalog.jsonb_array_elements_text(coalesce(app -> 'providers', '[]'::jsonb)) p
                  union select provider) ps));

-- A metadata argument: NULL, or a JSON object of at most 16 KiB.
create function auth._check_data(data jsonb, what text) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if data is not null and (pg_catalog.jsonb_typeof(data) <> 'object' or pg_catalog.octet_length(data::text) > 16384) then
    raise exception 'validation_failed: % must be a JSON object of at most 16384 bytes', what using errcode = '22023';
  end if;
end
$$;

-- The session_id claim of the request, or NULL when absent or not a uuid.
create function auth._claims_session_id() returns uuid
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return nullif(auth.jwt() ->> 'session_id', '')::uuid;
exception when invalid_text_representation then
  return null;
end
$$;

-- Make sure the user has an email identity for its address (anonymous users and users from
-- ID tokens have none), and that app_metadata lists the provider.
create function auth._ensure_email_identity(uid uuid, verified boolean) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users;
begin
  select * into strict u from auth.users x where x.id = uid;
  update auth.identities i
     set identity_data = i.identity_data || pg_catalog.jsonb_build_object('email', u.email)
                         || case when verified then '{"email_verified": true}'::jsonb else '{}'::jsonb end,
         updated_at = pg_catalog.now()
   where i.user_id = uid and i.provider = 'email';
  if not found then
    insert into auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
    values (uid::text, uid, pg_catalog.jsonb_build_object('sub', uid::text, 'email', u.email,
            'email_verified', verified, 'phone_verified', false), 'email', pg_catalog.now(), pg_catalog.now());
  end if;
  update auth.users x set raw_app_meta_data = auth._add_provider(x.raw_app_meta_data, 'email') where x.id = uid;
end
$$;

-- Count one hit against a fixed-window limit; true while within it. max <= 0: no limit.
create function auth._rate_limit(key text, max integer, window_seconds integer) returns boolean
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  n integer;
begin
  if max <= 0 then
    return true;
  end if;
  insert into auth.rate_limits as r (key, window_start, hits)
  values (_rate_limit.key, pg_catalog.now(), 1)
  on conflict on constraint rate_limits_pkey do update
     set hits = case when r.window_start > pg_catalog.now() - pg_catalog.make_interval(secs => window_seconds)
                     then r.hits + 1 else 1 end,
         window_start = case when r.window_start > pg_catalog.now() - pg_catalog.make_interval(secs => window_seconds)
                             then r.window_start else pg_catalog.now() end
  returning r.hits into n;
  return n <= max;
end
$$;

-- One more message to `address`, or over_email_send_rate_limit. Counted before the
-- address is looked up, so the limit says nothing about whether it has an account.
create function auth._count_email_send(address text, s jsonb) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  if not auth._rate_limit('email_send:' || address, (s ->> 'email_rate_limit')::integer,
                          (s ->> 'email_rate_window')::integer) then
    raise exception 'over_email_send_rate_limit: Email rate limit exceeded'
      using errcode = '53400',
            hint = 'Too many messages to this address; wait for auth.email_rate_window to pass.';
  end if;
end
$$;

-- Call a hook (a function of one jsonb named by a setting) with its errors caught and its
-- time limited to timeout_ms (auth._hook_timer, src/hooks.rs): a failing, slow or missing
-- hook is a clear error naming it, never a half-done call.
create function auth._call_hook(hook text, event jsonb, timeout_ms integer) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  fn regprocedure := pg_catalog.to_regprocedure(hook || '(jsonb)');
  previous bigint;
  result jsonb;
begin
  if fn is null then
    raise exception 'unexpected_failure: the hook "%" names no function %(jsonb)', hook, hook
      using errcode = '42883', hint = 'Create the function or reset the setting that names it.';
  end if;
  previous := auth._hook_timer(timeout_ms);
  begin
    execute pg_catalog.format('select pg_catalog.to_jsonb(%s($1))', fn::regproc) into result using event;
  exception
    when query_canceled then
      perform auth._hook_timer_restore(previous);
      raise exception 'unexpected_failure: the hook % did not finish within % ms', fn::regproc, timeout_ms
        using errcode = '57014';
    when others then
      perform auth._hook_timer_restore(previous);
      raise exception 'unexpected_failure: the hook % failed: %', fn::regproc, sqlerrm
        using errcode = '39000';
  end;
  perform auth._hook_timer_restore(previous);
  return result;
end
$$;

-- Hand a message to the delivery hook (auth.hook_send_email) or, by default, to
-- auth.email_outbox with a NOTIFY. The message has the shape of Supabase's send-email hook
-- payload, so a hook written for Supabase works here.
create function auth._deliver(uid uuid, address text, action text, message jsonb, s jsonb)
returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  id bigint;
  result jsonb;
begin
  if s ->> 'hook' is null then
    insert into auth.email_outbox (user_id, recipient, email_action_type, message)
    values (uid, address, action, message)
    returning email_outbox.id into id;
    -- The id only: the token never travels on the notification channel.
    perform pg_catalog.pg_notify('auth_email', id::text);
    return;
  end if;
  result := auth._call_hook(s ->> 'hook', message, (s ->> 'hook_timeout')::integer);
  if pg_catalog.jsonb_typeof(result) = 'object' and result ? 'error' then
    raise exception 'unexpected_failure: the send-email hook % refused the message: %', s ->> 'hook',
      coalesce(result -> 'error' ->> 'message', result ->> 'error')
      using errcode = '39000';
  end if;
end
$$;

-- Issue a one-time token for `action` (signup, recovery, magiclink, email_change, invite)
-- to `address`, replacing the user's previous one for the same purpose; return the
-- message (the user object and email_data with the token).
create function auth._issue_otp(uid uuid, action text, address text, s jsonb) returns jsonb
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
  u auth.users;
begin
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
      'token_hash', t[1],
      'redirect_to', s ->> 'redirect_to',
      'email_action_type', action,
      'site_url', s ->> 'site_url',
      'token_new', '',
      'token_hash_new', ''));
end
$$;

-- Issue a token and deliver its message.
create function auth._send_otp(uid uuid, action text, address text, s jsonb) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  perform auth._deliver(uid, address, action, auth._issue_otp(uid, action, address, s), s);
end
$$;

-- sign_up with auth.require_email_confirmation on: the new user gets a confirmation and no
-- session. Called by auth._sign_up (src/users.rs).
create function auth._confirm_sign_up(uid uuid, redirect_to text) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  s jsonb := auth._flow_settings(redirect_to);
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

-- sign_up of an address that has an account, with confirmation on. Unconfirmed: the new
-- password and metadata replace the old (whoever confirms the address owns the account;
-- an earlier sign-up by someone else must not keep a password in it) and a new
-- confirmation is sent. Confirmed: nothing changes and nothing is sent. Either way the
-- answer looks like a new sign-up's (a confirmed one gets an obfuscated user with a random
-- id and no identities, as GoTrue does), so sign_up does not reveal who has an account.
create function auth._repeated_sign_up(address text, hash text, metadata jsonb, redirect_to text)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  s jsonb := auth._flow_settings(redirect_to);
  u auth.users;
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
    select * into strict u from auth.users x where x.id = u.id;
    return auth._user_json(u);
  end if;
  if found then
    perform auth._audit('user_repeated_signup', u.id, '{"provider": "email", "confirmation": "not sent"}');
  end if;
  return pg_catalog.jsonb_build_object(
    'id', pg_catalog.gen_random_uuid(), 'aud', 'authenticated', 'role', 'authenticated',
    'email', address, 'email_confirmed_at', null, 'phone', '', 'phone_confirmed_at', null,
    'confirmation_sent_at', auth._iso(pg_catalog.now()), 'confirmed_at', null, 'last_sign_in_at', null,
    'app_metadata', '{"provider": "email", "providers": ["email"]}'::jsonb,
    'user_metadata', metadata, 'identities', '[]'::jsonb,
    'created_at', auth._iso(pg_catalog.now()), 'updated_at', auth._iso(pg_catalog.now()),
    'is_anonymous', false);
end
$$;

-- The user behind the request's claims, locked for update when asked; clear errors when
-- there is none.
create function auth._current_user(lock boolean) returns auth.users
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  uid uuid := auth.uid();
  sid uuid := auth._claims_session_id();
  u auth.users;
begin
  if uid is null then
    raise exception 'no_authorization: This call needs the claims of a signed-in user'
      using errcode = '28000', hint = 'Call it with a user''s access token (request.jwt.claims).';
  end if;
  if sid is not null and not exists (select from auth.sessions x where x.id = sid and x.user_id = uid) then
    raise exception 'session_not_found: Session from session_id claim in JWT does not exist'
      using errcode = '28000', hint = 'Sign in again.';
  end if;
  if lock then
    select * into u from auth.users x where x.id = uid and x.deleted_at is null for update;
  else
    select * into u from auth.users x where x.id = uid and x.deleted_at is null;
  end if;
  if not found then
    raise exception 'user_not_found: User from sub claim in JWT does not exist'
      using errcode = '28000', hint = 'Sign in again.';
  end if;
  return u;
end
$$;

create function auth."user"() returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return auth._user_json(auth._current_user(false));
end
$$;
comment on function auth."user"() is
  'The signed-in user''s user object (GoTrue''s GET /user), from request.jwt.claims.';

-- GoTrue's PUT /user: data (merged into user_metadata; a null value removes a key),
-- password (policy-checked; the user's other sessions end), email (a confirmation goes to
-- the new address; the address changes when it is verified).
create function auth.update_user(attributes jsonb, redirect_to text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users := auth._current_user(true);
  bad text;
  merged jsonb;
  addr text;
  changed text[] := '{}';
  s jsonb;
begin
  if attributes is null or pg_catalog.jsonb_typeof(attributes) <> 'object' then
    raise exception 'validation_failed: attributes must be a JSON object (email, password, data)'
      using errcode = '22023';
  end if;
  select k into bad from pg_catalog.jsonb_object_keys(attributes) k
   where k not in ('email', 'password', 'data') limit 1;
  if found then
    raise exception 'validation_failed: unknown attribute "%" (email, password and data can be changed)',
      pg_catalog.left(bad, 64) using errcode = '22023';
  end if;
  if attributes ? 'data' then
    if pg_catalog.jsonb_typeof(attributes -> 'data') <> 'object' then
      raise exception 'validation_failed: data must be a JSON object' using errcode = '22023';
    end if;
    merged := auth._merge_metadata(u.raw_user_meta_data, attributes -> 'data');
    if pg_catalog.octet_length(merged::text) > 16384 then
      raise exception 'validation_failed: user metadata is larger than 16384 bytes' using errcode = '22023';
    end if;
    update auth.users x set raw_user_meta_data = merged where x.id = u.id;
    changed := changed || 'data'::text;
  end if;
  if attributes ? 'password' then
    if pg_catalog.jsonb_typeof(attributes -> 'password') <> 'string' then
      raise exception 'validation_failed: password must be a string' using errcode = '22023';
    end if;
    if coalesce(u.encrypted_password, '') <> ''
       and auth._verify_password(attributes ->> 'password', u.encrypted_password) then
      raise exception 'same_password: New password should be different from the old password.'
        using errcode = '22023';
    end if;
    update auth.users x set encrypted_password = auth._hash_password(attributes ->> 'password')
     where x.id = u.id;
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
      if exists (select from auth.users x
                  where pg_catalog.lower(x.email) = addr and not x.is_sso_user and x.id <> u.id) then
        raise exception 'email_exists: A user with this email address has already been registered'
          using errcode = '23505';
      end if;
      s := auth._flow_settings(redirect_to);
      perform auth._count_email_send(addr, s);
      perform auth._send_otp(u.id, 'email_change', addr, s);
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

create function auth.recover(email text, redirect_to text default null) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  addr text := auth._normalize_email(email);
  s jsonb := auth._flow_settings(redirect_to);
  uid uuid;
begin
  perform auth._count_email_send(addr, s);
  select x.id into uid from auth.users x
   where pg_catalog.lower(x.email) = addr and not x.is_sso_user and x.deleted_at is null;
  if found then
    perform auth._send_otp(uid, 'recovery', addr, s);
    perform auth._audit('user_recovery_requested', uid, '{"provider": "email"}');
  end if;
  -- The same answer for an unknown address.
  return '{}'::jsonb;
end
$$;
comment on function auth.recover(text, text) is
  'Send a password-recovery link and code to the address if it has an account; the same answer either way.';

create function auth.sign_in_with_otp(email text, create_user boolean default true,
                                      data jsonb default null, redirect_to text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  addr text := auth._normalize_email(email);
  s jsonb := auth._flow_settings(redirect_to);
  uid uuid;
begin
  perform auth._check_data(data, 'data');
  perform auth._count_email_send(addr, s);
  select x.id into uid from auth.users x
   where pg_catalog.lower(x.email) = addr and not x.is_sso_user and x.deleted_at is null;
  if not found then
    if not coalesce(create_user, true) then
      -- No account and none wanted: the same answer as a sent link (no enumeration).
      return '{}'::jsonb;
    end if;
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
  end if;
  perform auth._send_otp(uid, 'magiclink', addr, s);
  perform auth._audit('user_otp_requested', uid, '{"provider": "email"}');
  return '{}'::jsonb;
end
$$;
comment on function auth.sign_in_with_otp(text, boolean, jsonb, text) is
  'Passwordless sign-in: send a magic link and a six-digit code (creating the user unless create_user is false).';

-- Send the pending sign-up confirmation or email change again (GoTrue's /resend); the
-- same answer whether or not there was one to send.
create function auth.resend(type text, email text, redirect_to text default null) returns jsonb
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
  s := auth._flow_settings(redirect_to);
  perform auth._count_email_send(addr, s);
  if type = 'signup' then
    select x.id into uid from auth.users x
     where pg_catalog.lower(x.email) = addr and not x.is_sso_user and x.deleted_at is null
       and x.email_confirmed_at is null;
  else
    select x.id into uid from auth.users x
     where x.email_change = addr and x.deleted_at is null
       and exists (select from auth.one_time_tokens o
                    where o.user_id = x.id and o.token_type = 'email_change_token_new' and o.relates_to = addr);
  end if;
  if uid is not null then
    perform auth._send_otp(uid, type, addr, s);
    perform auth._audit('user_confirmation_requested', uid, pg_catalog.jsonb_build_object('type', type));
  end if;
  return '{}'::jsonb;
end
$$;
comment on function auth.resend(text, text, text) is
  'Send a pending sign-up confirmation or email-change confirmation again.';

-- Verify a link token or six-digit code and return a session. type: signup, invite,
-- magiclink, recovery, email_change, or email (a code or link of a sign-up, magic link or
-- invitation). email may be NULL for a link token, which alone identifies its row.
create function auth.verify_otp(email text, token text, type text) returns jsonb
language plpgsql volatile security definer
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
  session jsonb;
begin
  if kinds is null then
    raise exception 'validation_failed: type must be signup, invite, magiclink, recovery, email_change or email'
      using errcode = '22023';
  end if;
  if token is null or token = '' or pg_catalog.length(token) > 256 then
    raise exception 'validation_failed: a token is required' using errcode = '22023';
  end if;
  if email is not null then
    addr := auth._normalize_email(email);
  end if;
  if auth._locked_out(addr) then
    raise exception 'over_request_rate_limit: Too many failed attempts; try again later'
      using errcode = '53400';
  end if;
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
    -- Counted (in a transaction of its own) toward the lockout, like a wrong password.
    perform auth._otp_failed(addr, o.user_id, type);
    raise exception 'otp_expired: Token has expired or is invalid'
      using errcode = '28000', hint = 'Ask for a new link or code.';
  end if;
  delete from auth.one_time_tokens t where t.id = o.id;
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
  session := auth._start_session(u.id, method);
  perform auth._audit(case o.token_type
      when 'confirmation_token' then 'user_signedup' when 'invite_token' then 'invite_accepted'
      when 'email_change_token_new' then 'user_modified' else 'login' end,
    u.id, pg_catalog.jsonb_build_object('provider', 'email', 'method', method));
  return session;
end
$$;
comment on function auth.verify_otp(text, text, text) is
  'Verify a link token or six-digit code (signup, invite, magiclink, recovery, email_change, email); returns a session.';

-- sql/admin.sql, as in a fresh install.
-- Audit an admin action on a user.
create function auth._audit_user_admin(action text, u auth.users, traits jsonb) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  perform auth._audit_admin(action, traits || pg_catalog.jsonb_build_object(
    'user_id', u.id, 'user_email', u.email, 'actor_role', pg_catalog.current_user()));
end
$$;

-- The keys of attributes must be among allowed; every value of a metadata key an object.
create function auth._check_attributes(attributes jsonb, allowed text[]) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  bad text;
begin
  if attributes is null or pg_catalog.jsonb_typeof(attributes) <> 'object' then
    raise exception 'validation_failed: attributes must be a JSON object (%)', pg_catalog.array_to_string(allowed, ', ')
      using errcode = '22023';
  end if;
  select k into bad from pg_catalog.jsonb_object_keys(attributes) k where k <> all (allowed) limit 1;
  if bad is not null then
    raise exception 'validation_failed: unknown attribute "%" (%)', pg_catalog.left(bad, 64),
      pg_catalog.array_to_string(allowed, ', ') using errcode = '22023';
  end if;
  for bad in select k from pg_catalog.unnest(array['user_metadata', 'app_metadata']) k where attributes ? k loop
    perform auth._check_data(attributes -> bad, bad);
  end loop;
  for bad in select k from pg_catalog.unnest(array['email', 'password', 'ban_duration']) k
              where attributes ? k and pg_catalog.jsonb_typeof(attributes -> k) <> 'string' loop
    raise exception 'validation_failed: % must be a string', bad using errcode = '22023';
  end loop;
  if attributes ? 'email_confirm' and pg_catalog.jsonb_typeof(attributes -> 'email_confirm') <> 'boolean' then
    raise exception 'validation_failed: email_confirm must be true or false' using errcode = '22023';
  end if;
end
$$;

-- banned_until for a ban_duration: 'none' lifts a ban; otherwise an interval from now
-- ('24h', '7 days', '1h30m').
create function auth._banned_until(duration text) returns timestamptz
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  d interval;
begin
  if duration = 'none' then
    return null;
  end if;
  begin
    d := duration::interval;
  exception when others then
    raise exception 'validation_failed: ban_duration must be "none" or a duration such as "24h"' using errcode = '22023';
  end;
  if d <= interval '0' then
    raise exception 'validation_failed: ban_duration must be positive' using errcode = '22023';
  end if;
  return pg_catalog.now() + d;
end
$$;

-- The user with this id, or user_not_found (P0002, which PostgREST answers with 404).
create function auth._admin_user(id uuid, lock boolean) returns auth.users
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users;
begin
  if lock then
    select * into u from auth.users x where x.id = _admin_user.id and x.deleted_at is null for update;
  else
    select * into u from auth.users x where x.id = _admin_user.id and x.deleted_at is null;
  end if;
  if not found then
    raise exception 'user_not_found: User not found' using errcode = 'P0002';
  end if;
  return u;
end
$$;

create function auth.admin_create_user(attributes jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  addr text;
  confirm boolean;
  uid uuid;
  u auth.users;
begin
  perform auth._check_attributes(attributes,
    '{id,email,password,email_confirm,user_metadata,app_metadata,ban_duration}');
  addr := auth._normalize_email(attributes ->> 'email');
  confirm := coalesce((attributes ->> 'email_confirm')::boolean, false);
  begin
    uid := coalesce((attributes ->> 'id')::uuid, pg_catalog.gen_random_uuid());
  exception when invalid_text_representation then
    raise exception 'validation_failed: id must be a uuid' using errcode = '22023';
  end;
  insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                          raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at,
                          banned_until, is_anonymous)
  values ('00000000-0000-0000-0000-000000000000', uid, 'authenticated', 'authenticated', addr,
          case when attributes ? 'password' then auth._hash_password(attributes ->> 'password') else '' end,
          case when confirm then pg_catalog.now() end,
          '{"provider": "email", "providers": ["email"]}'::jsonb || coalesce(attributes -> 'app_metadata', '{}'),
          coalesce(attributes -> 'user_metadata', '{}'), false, pg_catalog.now(), pg_catalog.now(),
          case when attributes ? 'ban_duration' then auth._banned_until(attributes ->> 'ban_duration') end, false)
  on conflict do nothing
  returning * into u;
  if u.id is null then
    raise exception 'email_exists: A user with this email address has already been registered'
      using errcode = '23505';
  end if;
  perform auth._ensure_email_identity(u.id, confirm);
  select * into strict u from auth.users x where x.id = uid;
  perform auth._audit_user_admin('user_signedup', u, '{"provider": "email", "via": "admin"}');
  return auth._user_json(u);
end
$$;
comment on function auth.admin_create_user(jsonb) is
  'Admin: create a user (email, password, email_confirm, user_metadata, app_metadata, ban_duration, id).';

create function auth.admin_get_user(id uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return auth._user_json(auth._admin_user(id, false));
end
$$;
comment on function auth.admin_get_user(uuid) is 'Admin: the user object of a user.';

create function auth.admin_list_users(page integer default 1, per_page integer default 50, email text default null)
returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  pattern text;
  total bigint;
  users jsonb;
  last integer;
begin
  if page is null or page < 1 or per_page is null or per_page < 1 or per_page > 1000 then
    raise exception 'validation_failed: page must be 1 or more and per_page between 1 and 1000'
      using errcode = '22023';
  end if;
  -- A substring of the address, matched literally (no LIKE wildcards from the caller).
  pattern := '%' || pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
               pg_catalog.lower(coalesce(email, '')), '\', '\\'), '%', '\%'), '_', '\_') || '%';
  select pg_catalog.count(*) into total from auth.users x
   where x.deleted_at is null and pg_catalog.lower(coalesce(x.email, '')) like pattern;
  select coalesce(pg_catalog.jsonb_agg(auth._user_json(x) order by x.created_at, x.id), '[]')
    into users
    from (select * from auth.users y
           where y.deleted_at is null and pg_catalog.lower(coalesce(y.email, '')) like pattern
           order by y.created_at, y.id
           offset (page - 1)::bigint * per_page limit per_page) x;
  last := greatest(1, ((total + per_page - 1) / per_page)::integer);
  return pg_catalog.jsonb_build_object('users', users, 'aud', 'authenticated', 'total', total,
    'page', page, 'per_page', per_page, 'last_page', last,
    'next_page', case when page < last then page + 1 end);
end
$$;
comment on function auth.admin_list_users(integer, integer, text) is
  'Admin: users page by page (oldest first), optionally those whose email contains a string.';

create function auth.admin_update_user(id uuid, attributes jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users := auth._admin_user(id, true);
  addr text;
  changed text[] := '{}';
begin
  perform auth._check_attributes(attributes,
    '{email,password,email_confirm,user_metadata,app_metadata,ban_duration}');
  if attributes ? 'email' then
    addr := auth._normalize_email(attributes ->> 'email');
    if addr is distinct from pg_catalog.lower(u.email) then
      begin
        -- An admin's change needs no confirmation; a converted anonymous user is permanent.
        update auth.users x set email = addr, email_change = '', is_anonymous = false where x.id = u.id;
      exception when unique_violation then
        raise exception 'email_exists: A user with this email address has already been registered'
          using errcode = '23505';
      end;
      perform auth._ensure_email_identity(u.id, coalesce((attributes ->> 'email_confirm')::boolean, false));
      delete from auth.one_time_tokens o where o.user_id = u.id and o.token_type = 'email_change_token_new';
      changed := changed || 'email'::text;
    end if;
  end if;
  if coalesce((attributes ->> 'email_confirm')::boolean, false) then
    update auth.users x set email_confirmed_at = coalesce(x.email_confirmed_at, pg_catalog.now()) where x.id = u.id;
    update auth.identities i set identity_data = i.identity_data || '{"email_verified": true}'
     where i.user_id = u.id and i.provider = 'email';
    changed := changed || 'email_confirm'::text;
  end if;
  if attributes ? 'password' then
    update auth.users x set encrypted_password = auth._hash_password(attributes ->> 'password') where x.id = u.id;
    changed := changed || 'password'::text;
  end if;
  if attributes ? 'user_metadata' then
    update auth.users x set raw_user_meta_data = auth._merge_metadata(x.raw_user_meta_data, attributes -> 'user_metadata')
     where x.id = u.id;
    changed := changed || 'user_metadata'::text;
  end if;
  if attributes ? 'app_metadata' then
    update auth.users x set raw_app_meta_data = auth._merge_metadata(x.raw_app_meta_data, attributes -> 'app_metadata')
     where x.id = u.id;
    changed := changed || 'app_metadata'::text;
  end if;
  if attributes ? 'ban_duration' then
    update auth.users x set banned_until = auth._banned_until(attributes ->> 'ban_duration') where x.id = u.id;
    changed := changed || 'ban_duration'::text;
  end if;
  update auth.users x set updated_at = pg_catalog.now() where x.id = u.id returning * into u;
  perform auth._audit_user_admin('user_modified', u, pg_catalog.jsonb_build_object('fields', changed));
  return auth._user_json(u);
end
$$;
comment on function auth.admin_update_user(uuid, jsonb) is
  'Admin: change email (no confirmation), password, email_confirm, user_metadata, app_metadata (merged), ban_duration ("none" unbans).';

create function auth.admin_delete_user(id uuid, should_soft_delete boolean default false) returns jsonb
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

-- A token for signup (creates the user with the password), invite (creates the user
-- without one), magiclink or recovery (an existing user); returns its message, which
-- admin_generate_link hands back and admin_invite_user delivers.
create function auth._admin_link(type text, email text, password text, data jsonb, s jsonb)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  addr text := auth._normalize_email(email);
  u auth.users;
  m jsonb;
begin
  if type is null or type not in ('signup', 'invite', 'magiclink', 'recovery') then
    raise exception 'validation_failed: type must be signup, invite, magiclink or recovery' using errcode = '22023';
  end if;
  perform auth._check_data(data, 'data');
  select * into u from auth.users x
   where pg_catalog.lower(x.email) = addr and not x.is_sso_user and x.deleted_at is null for update;
  if type in ('signup', 'invite') then
    if type = 'signup' and password is null then
      raise exception 'validation_failed: a signup link needs a password' using errcode = '22023';
    end if;
    if u.id is not null and u.email_confirmed_at is not null then
      raise exception 'email_exists: A user with this email address has already been registered'
        using errcode = '23505';
    end if;
    if u.id is null then
      perform auth.admin_create_user(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
        'email', addr, 'password', password, 'user_metadata', data)));
      select * into strict u from auth.users x where pg_catalog.lower(x.email) = addr and not x.is_sso_user;
    end if;
  elsif u.id is null then
    raise exception 'user_not_found: User not found' using errcode = 'P0002';
  end if;
  m := auth._issue_otp(u.id, type, addr, s);
  perform auth._audit_user_admin(case type when 'invite' then 'user_invited' when 'recovery' then 'user_recovery_requested'
                                   else 'user_confirmation_requested' end, u,
                                 pg_catalog.jsonb_build_object('type', type, 'via', 'generate_link'));
  return m;
end
$$;

-- The link and code, returned to the admin instead of being sent: the shape of
-- supabase-js's generateLink result.
create function auth.admin_generate_link(type text, email text, password text default null,
                                         data jsonb default null, redirect_to text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  m jsonb := auth._admin_link(type, email, password, data, auth._flow_settings(redirect_to));
begin
  return pg_catalog.jsonb_build_object(
    'properties', pg_catalog.jsonb_build_object(
      'action_link', (m -> 'email_data' ->> 'redirect_to') || '?token_hash=' || (m -> 'email_data' ->> 'token_hash') || '&type=' || type,
      'email_otp', m -> 'email_data' ->> 'token',
      'hashed_token', m -> 'email_data' ->> 'token_hash',
      'redirect_to', m -> 'email_data' ->> 'redirect_to',
      'verification_type', type),
    'user', m -> 'user');
end
$$;
comment on function auth.admin_generate_link(text, text, text, jsonb, text) is
  'Admin: a signup, invite, magiclink or recovery link and code for an address, returned instead of sent.';

-- Supabase's inviteUserByEmail: create the user (no password) and send an invite.
create function auth.admin_invite_user(email text, data jsonb default null, redirect_to text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  s jsonb := auth._flow_settings(redirect_to);
  m jsonb := auth._admin_link('invite', email, null, data, s);
begin
  perform auth._deliver((m -> 'user' ->> 'id')::uuid, m -> 'user' ->> 'email', 'invite', m, s);
  return m -> 'user';
end
$$;
comment on function auth.admin_invite_user(text, jsonb, text) is
  'Admin: create a user without a password and send an invitation (verify_otp type invite).';

-- Anonymous sign-in: a user without email or password, is_anonymous, a session (amr
-- anonymous). Limited per client IP (a request without one counts in one shared bucket).
create function auth.sign_in_anonymously(data jsonb default '{}') returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  s jsonb := auth._flow_settings(null);
  uid uuid;
  session jsonb;
begin
  if not (s ->> 'anonymous_sign_ins')::boolean then
    raise exception 'anonymous_provider_disabled: Anonymous sign-ins are disabled'
      using errcode = '28000', hint = 'Set auth.anonymous_sign_ins = on to allow them.';
  end if;
  perform auth._check_data(data, 'data');
  if not auth._rate_limit('anonymous_ip:' || coalesce(auth._client_ip(), 'unknown'),
                          (s ->> 'anonymous_rate_limit')::integer, 3600) then
    raise exception 'over_request_rate_limit: Too many anonymous sign-ins from this address; try again later'
      using errcode = '53400';
  end if;
  insert into auth.users (instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data,
                          raw_user_meta_data, is_super_admin, created_at, updated_at, last_sign_in_at, is_anonymous)
  values ('00000000-0000-0000-0000-000000000000', pg_catalog.gen_random_uuid(), 'authenticated', 'authenticated',
          null, '', '{}', coalesce(data, '{}'), false, pg_catalog.now(), pg_catalog.now(), pg_catalog.now(), true)
  returning id into uid;
  session := auth._start_session(uid, 'anonymous');
  perform auth._audit('user_signedup', uid, '{"provider": "anonymous"}');
  return session;
end
$$;
comment on function auth.sign_in_anonymously(jsonb) is
  'Sign in as a new anonymous user (is_anonymous); the user becomes permanent by adding an email.';

-- Supabase's signInWithIdToken: an OIDC ID token from a trusted issuer (Google, Apple, any
-- OIDC provider registered with auth.set_trusted_issuer, whose audiences are the client
-- ids) signs in the user of the identity (provider, sub), creating or linking it.
create function auth.sign_in_with_id_token(provider text, id_token text, nonce text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  s jsonb := auth._flow_settings(null);
  claims jsonb;
  pname text := pg_catalog.lower(pg_catalog.btrim(provider));
  iss text;
  known text;
  sub text;
  addr text;
  verified boolean;
  data jsonb;
  uid uuid;
  created boolean := false;
  u auth.users;
  session jsonb;
begin
  if pname is null or pname = '' or pg_catalog.length(pname) > 2048 then
    raise exception 'validation_failed: provider is required (google, apple, or the issuer URL)' using errcode = '22023';
  end if;
  if id_token is null then
    raise exception 'validation_failed: id_token is required' using errcode = '22023';
  end if;
  claims := auth._verify_id_token(id_token);
  iss := claims ->> 'iss';
  -- The provider is the issuer URL, or a well-known name for it.
  known := case pname when 'google' then 'https://accounts.google.com'
                      when 'apple' then 'https://appleid.apple.com' end;
  if iss is distinct from pg_catalog.btrim(provider) and iss is distinct from known then
    raise exception 'bad_jwt: the ID token was issued by "%", not by provider "%"', pg_catalog.left(iss, 200), pg_catalog.left(provider, 200)
      using errcode = '28000';
  end if;
  sub := claims ->> 'sub';
  if sub is null or sub = '' then
    raise exception 'bad_jwt: the ID token has no sub claim' using errcode = '28000';
  end if;
  if nonce is not null then
    if claims ->> 'nonce' is null or (claims ->> 'nonce' <> nonce and claims ->> 'nonce' <> auth._otp_hash(nonce)) then
      raise exception 'bad_jwt: the nonce does not match the ID token''s' using errcode = '28000';
    end if;
  elsif claims ? 'nonce' then
    raise exception 'bad_jwt: the ID token carries a nonce; pass the nonce it was requested with'
      using errcode = '28000';
  end if;
  addr := pg_catalog.lower(claims ->> 'email');
  verified := coalesce(claims -> 'email_verified' in ('true'::jsonb, '"true"'::jsonb), false);
  data := claims - array['aud', 'exp', 'iat', 'nbf', 'nonce', 'at_hash', 'c_hash', 'auth_time', 'azp', 'jti'];
  select i.user_id into uid from auth.identities i where i.provider = pname and i.provider_id = sub;
  if uid is not null then
    update auth.identities i set identity_data = data, last_sign_in_at = pg_catalog.now(), updated_at = pg_catalog.now()
     where i.provider = pname and i.provider_id = sub;
  else
    if addr is not null then
      select x.id into uid from auth.users x
       where pg_catalog.lower(x.email) = addr and not x.is_sso_user and x.deleted_at is null;
      if uid is not null and not (verified and (s ->> 'id_token_link_by_email')::boolean) then
        raise exception 'email_exists: A user with this email address has already been registered'
          using errcode = '23505',
                hint = 'Sign in with that account first; linking needs a verified email and auth.id_token_link_by_email.';
      end if;
    end if;
    if uid is null then
      insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                              raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at, is_anonymous)
      values ('00000000-0000-0000-0000-000000000000', pg_catalog.gen_random_uuid(), 'authenticated', 'authenticated',
              addr, '', case when verified then pg_catalog.now() end,
              pg_catalog.jsonb_build_object('provider', pname, 'providers', pg_catalog.jsonb_build_array(pname)),
              data, false, pg_catalog.now(), pg_catalog.now(), false)
      returning id into uid;
      created := true;
    else
      update auth.users x set raw_app_meta_data = auth._add_provider(x.raw_app_meta_data, pname) where x.id = uid;
    end if;
    insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
    values (sub, uid, data, pname, pg_catalog.now(), pg_catalog.now(), pg_catalog.now());
  end if;
  select * into strict u from auth.users x where x.id = uid for update;
  if u.deleted_at is not null then
    raise exception 'bad_jwt: the user of this identity has been deleted' using errcode = '28000';
  end if;
  if u.banned_until > pg_catalog.now() then
    raise exception 'user_banned: User is banned' using errcode = '28000';
  end if;
  update auth.users x
     set last_sign_in_at = pg_catalog.now(), updated_at = pg_catalog.now(),
         email_confirmed_at = case when verified and pg_catalog.lower(x.email) = addr
                                   then coalesce(x.email_confirmed_at, pg_catalog.now()) else x.email_confirmed_at end
   where x.id = uid;
  session := auth._start_session(uid, 'oauth');
  perform auth._audit(case when created then 'user_signedup' else 'login' end, uid,
                      pg_catalog.jsonb_build_object('provider', pname));
  return session;
end
$$;
comment on function auth.sign_in_with_id_token(text, text, text) is
  'Sign in with an OIDC ID token of a trusted issuer (signInWithIdToken); creates or links the user; amr oauth.';

-- From sql/finalize.sql: the user object gains GoTrue's optional fields, sign_up its
-- redirect_to, cleanup the one-time tokens and the outbox, sign_out reads the session
-- id through auth._claims_session_id.
create or replace function auth._user_json(u auth.users) returns jsonb
language sql stable parallel safe
begin atomic
  select pg_catalog.jsonb_build_object(
    'id', u.id,
    'aud', coalesce(u.aud, ''),
    'role', coalesce(u.role, ''),
    'email', coalesce(u.email, ''),
    'email_confirmed_at', auth._iso(u.email_confirmed_at),
    'phone', coalesce(u.phone, ''),
    'phone_confirmed_at', auth._iso(u.phone_confirmed_at),
    'confirmed_at', auth._iso(u.confirmed_at),
    'last_sign_in_at', auth._iso(u.last_sign_in_at),
    'app_metadata', coalesce(u.raw_app_meta_data, '{}'::jsonb),
    'user_metadata', coalesce(u.raw_user_meta_data, '{}'::jsonb),
    'identities', coalesce((
      select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'identity_id', i.id,
               'id', i.provider_id,
               'user_id', i.user_id,
               'identity_data', i.identity_data,
               'provider', i.provider,
               'last_sign_in_at', auth._iso(i.last_sign_in_at),
               'created_at', auth._iso(i.created_at),
               'updated_at', auth._iso(i.updated_at),
               'email', i.email) order by i.created_at, i.id)
        from auth.identities i
       where i.user_id = u.id), '[]'::jsonb),
    'created_at', auth._iso(u.created_at),
    'updated_at', auth._iso(u.updated_at),
    'is_anonymous', u.is_anonymous)
  -- GoTrue's optional fields, present only when set.
  || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
    'confirmation_sent_at', auth._iso(u.confirmation_sent_at),
    'recovery_sent_at', auth._iso(u.recovery_sent_at),
    'email_change_sent_at', auth._iso(u.email_change_sent_at),
    'new_email', nullif(u.email_change, ''),
    'invited_at', auth._iso(u.invited_at),
    'banned_until', auth._iso(u.banned_until)));
end;

create function auth.sign_up(email text, password text, data jsonb default '{}'::jsonb,
                             redirect_to text default null)
returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
return auth._sign_up_with_redirect(email, password, data::text, redirect_to);
comment on function auth.sign_up(text, text, jsonb, text) is
  'Create a user with email and password; returns a session object like GoTrue''s /signup (the user object alone when auth.require_email_confirmation is on).';

create or replace function auth.cleanup(batch_size integer default 1000) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  n_sessions bigint;
  n_tokens bigint;
  n_otps bigint;
  n_outbox bigint;
begin
  if batch_size is null or batch_size < 1 or batch_size > 100000 then
    raise exception 'validation_failed: batch_size must be between 1 and 100000'
      using errcode = '22023';
  end if;
  delete from auth.sessions d
   where d.id in (select s.id from auth.sessions s
                   where not auth._session_is_live(s.id)
                   limit batch_size
                   for update skip locked);
  get diagnostics n_sessions = row_count;
  delete from auth.refresh_tokens d
   where d.id in (select t.id from auth.refresh_tokens t
                   where t.revoked and t.updated_at < pg_catalog.now() - auth._seconds('auth.revoked_token_retention')
                   limit batch_size
                   for update skip locked);
  get diagnostics n_tokens = row_count;
  delete from auth.sign_in_failures f
   where f.window_start < pg_catalog.now() - auth._seconds('auth.lockout_window');
  delete from auth.rate_limits r
   where r.window_start < pg_catalog.now() - auth._seconds('auth.email_rate_window');
  -- Expired one-time tokens, and outbox messages whose tokens have expired.
  delete from auth.one_time_tokens d
   where d.id in (select o.id from auth.one_time_tokens o where o.expires_at < pg_catalog.now()
                   limit batch_size for update skip locked);
  get diagnostics n_otps = row_count;
  delete from auth.email_outbox d
   where d.id in (select m.id from auth.email_outbox m
                   where m.created_at < pg_catalog.now() - auth._seconds('auth.otp_expiry')
                   limit batch_size for update skip locked);
  get diagnostics n_outbox = row_count;
  return jsonb_build_object('sessions', n_sessions, 'refresh_tokens', n_tokens,
                            'one_time_tokens', n_otps, 'email_outbox', n_outbox);
end
$$;
comment on function auth.cleanup(integer) is
  'Delete ended sessions, refresh tokens revoked longer than auth.revoked_token_retention, expired one-time tokens and outbox messages, in batches.';

create or replace function auth.sign_out(scope text default 'global') returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  sid uuid := auth._claims_session_id();
  uid uuid := auth.uid();
  n bigint;
begin
  if scope is null or scope not in ('global', 'local', 'others') then
    raise exception 'validation_failed: scope must be global, local or others'
      using errcode = '22023';
  end if;
  if sid is null or uid is null
     or not exists (select 1 from auth.sessions s where s.id = sid and s.user_id = uid) then
    raise exception 'session_not_found: No session for this request'
      using errcode = '28000', hint = 'Sign-out needs the claims of a signed-in user''s access token.';
  end if;
  if scope = 'global' then
    delete from auth.sessions s where s.user_id = uid;
  elsif scope = 'local' then
    delete from auth.sessions s where s.id = sid;
  else
    delete from auth.sessions s where s.user_id = uid and s.id <> sid;
  end if;
  get diagnostics n = row_count;
  perform auth._audit('logout', uid, jsonb_build_object('scope', scope, 'sessions', n));
end
$$;

revoke all on function auth."_flow_settings"(text), auth."_new_otp"(), auth."_normalize_email"(text),
  auth."_hash_password"(text), auth."_start_session"(uuid, text), auth."_locked_out"(text),
  auth."_otp_failed"(text, uuid, text), auth."_sign_up_with_redirect"(text, text, text, text),
  auth._otp_hash(text), auth._rate_limit(text, integer, integer), auth._count_email_send(text, jsonb),
  auth._deliver(uuid, text, text, jsonb, jsonb), auth._send_otp(uuid, text, text, jsonb),
  auth._confirm_sign_up(uuid, text), auth._repeated_sign_up(text, text, jsonb, text),
  auth._current_user(boolean), auth."user"(), auth.update_user(jsonb, text), auth.recover(text, text),
  auth.sign_in_with_otp(text, boolean, jsonb, text), auth.resend(text, text, text),
  auth.verify_otp(text, text, text), auth.sign_up(text, text, jsonb, text),
  auth."_client_ip"(), auth."_verify_id_token"(text), auth."_hook_timer"(integer), auth."_hook_timer_restore"(bigint),
  auth._call_hook(text, jsonb, integer), auth._issue_otp(uuid, text, text, jsonb),
  auth._audit_user_admin(text, auth.users, jsonb), auth._check_attributes(jsonb, text[]),
  auth._merge_metadata(jsonb, jsonb), auth._add_provider(jsonb, text), auth._check_data(jsonb, text),
  auth._claims_session_id(), auth._admin_link(text, text, text, jsonb, jsonb), auth._banned_until(text), auth._admin_user(uuid, boolean),
  auth._ensure_email_identity(uuid, boolean), auth.admin_create_user(jsonb), auth.admin_get_user(uuid),
  auth.admin_list_users(integer, integer, text), auth.admin_update_user(uuid, jsonb),
  auth.admin_delete_user(uuid, boolean), auth.admin_generate_link(text, text, text, jsonb, text),
  auth.admin_invite_user(text, jsonb, text), auth.sign_in_anonymously(jsonb),
  auth.sign_in_with_id_token(text, text, text)
  from public;
revoke all on auth.one_time_tokens, auth.email_outbox, auth.rate_limits from public;
revoke all on sequence auth.email_outbox_id_seq from public;
grant execute on function auth.sign_up(text, text, jsonb, text) to anon, authenticated, service_role;
grant execute on function auth.recover(text, text), auth.sign_in_with_otp(text, boolean, jsonb, text),
  auth.resend(text, text, text), auth.verify_otp(text, text, text),
  auth."user"(), auth.update_user(jsonb, text)
  to anon, authenticated, service_role;
grant execute on function auth.sign_in_anonymously(jsonb), auth.sign_in_with_id_token(text, text, text)
  to anon, authenticated, service_role;
grant execute on function auth.admin_create_user(jsonb), auth.admin_get_user(uuid),
  auth.admin_list_users(integer, integer, text), auth.admin_update_user(uuid, jsonb),
  auth.admin_delete_user(uuid, boolean), auth.admin_generate_link(text, text, text, jsonb, text),
  auth.admin_invite_user(text, jsonb, text)
  to service_role;
grant select, delete on auth.email_outbox to service_role;
grant update (sent_at) on auth.email_outbox to service_role;
