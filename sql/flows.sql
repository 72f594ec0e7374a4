-- auth_ext account flows: the current user, profile and password changes, sign-up
-- confirmation, recovery, magic links and six-digit codes, email change, and the delivery
-- of their messages. The Rust helpers they call (auth._new_otp, auth._hash_password,
-- auth._start_session, ...) are in src/flows.rs.
--
-- Every public function here is SECURITY DEFINER (the tables are the owner's alone) with
-- search_path pinned to pg_catalog, pg_temp, and qualifies every name. Bodies are plpgsql
-- because they call functions that are created later in the install script.
-- Tokens: the link token has 256 random bits; the six-digit code is guessable in a
-- million tries, so every wrong code counts toward the sign-in lockout.

-- SHA-256 (hex) of a text (an OIDC nonce is compared in this form).
create function auth._sha256_hex(value text) returns text
language sql immutable parallel safe
return pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(value, 'UTF8')), 'hex');

-- What auth.one_time_tokens stores of a token or code: an HMAC of its SHA-256 under the
-- key in auth.secret_keys (auth._keyed_hash, src/keys.rs). A six-digit code has a million
-- values, so an unkeyed hash of it would give the code away to anyone with the row.
create function auth._otp_hash(token text) returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return auth._keyed_hash(auth._sha256_hex(token));
end
$$;

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

-- A metadata argument: NULL, or a JSON object of at most 16 KiB that JSON clients can read
-- back (numbers a double can hold, at most 64 levels deep): the one validation of every
-- path that stores metadata (auth._check_json, src/metadata.rs).
create function auth._check_data(data jsonb, what text) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if data is not null then
    perform auth._check_json(data::text, what, 16384);
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

-- Call a hook (a function of one jsonb named by a setting) as the role supabase_auth_admin,
-- with its errors caught and its time limited to timeout_ms (auth._run_hook and
-- auth._hook_timer, src/hooks.rs): a failing, slow or missing hook, or one the hook role
-- may not run, is a clear error naming it, never a half-done call.
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
    -- As the hook role, never as the owner (src/hooks.rs).
    result := auth._run_hook(fn::pg_catalog.oid, event::text)::jsonb;
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

-- The PKCE parameters of a call that sends a link, by GoTrue's rules: both or neither (an
-- empty string counts as absent); the method s256 or plain, in any case; the challenge 43
-- to 128 characters of [A-Za-z0-9._~-] (RFC 7636, 4.2). NULL without them, else
-- {"code_challenge", "code_challenge_method"} with the method lower-cased.
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

-- The flows' settings with the PKCE flow of the call, if it has one (auth._issue_otp
-- reads it there).
create function auth._with_pkce(s jsonb, pkce jsonb) returns jsonb
language sql immutable parallel safe
return case when pkce is null then s else s || pg_catalog.jsonb_build_object('pkce', pkce) end;

-- A PKCE flow state for the link about to be sent to the user. It replaces the user's flows
-- of the same purpose whose code was never issued (their links are replaced too: one token
-- per user and purpose). authentication_method is the amr method of the session the code
-- will give, as verify_otp names it. No code yet: auth.verify_link issues one.
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

-- Issue a one-time token for `action` (signup, recovery, magiclink, email_change, invite)
-- to `address`, replacing the user's previous one for the same purpose; return the
-- message (the user object and email_data with the token). With a PKCE flow in `s`, a
-- flow state is made and the link token carries GoTrue's pkce_ prefix, which makes
-- auth.verify_link answer an auth code instead of a session.
create function auth._issue_otp(uid uuid, action text, address text, s jsonb) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  kind text := case action
    when 'signup' then 'confirmation_token' when 'recovery' then 'recovery_token'
    when 'magiclink' then 'magiclink_token' when 'email_change' then 'email_change_token_new'
    when 'invite' then 'invite_token' when 'reauthentication' then 'reauthentication_token' end;
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
         invited_at = case when action = 'invite' then coalesce(x.invited_at, pg_catalog.now()) else x.invited_at end,
         reauthentication_sent_at = case when action = 'reauthentication' then pg_catalog.now()
                                         else x.reauthentication_sent_at end
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

-- Issue a token and deliver its message.
create function auth._send_otp(uid uuid, action text, address text, s jsonb) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  perform auth._deliver(uid, address, action, auth._issue_otp(uid, action, address, s), s);
end
$$;

-- Send `action` to `address` for the user uid and audit it. Without a user (the address
-- has no account), do the same work for a decoy user inside a subtransaction that is then
-- rolled back: the call takes the time it would take for an account, so its duration does
-- not tell whether the address has one. Nothing of the decoy remains and nothing is
-- delivered (a send-email hook is not called for it, so a slow hook is the one difference
-- left; see docs/security.md).
-- A user that exists only until the subtransaction around the caller rolls back.
create function auth._decoy_user() returns uuid
language sql volatile
set search_path = pg_catalog, pg_temp
begin atomic
  insert into auth.users (instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data,
                          raw_user_meta_data, is_super_admin, created_at, updated_at, is_anonymous)
  values ('00000000-0000-0000-0000-000000000000', pg_catalog.gen_random_uuid(), 'authenticated',
          'authenticated', null, '', '{"provider": "email", "providers": ["email"]}', '{}', false,
          pg_catalog.now(), pg_catalog.now(), false)
  returning id;
end;

create function auth._send_or_decoy(uid uuid, action text, address text, s jsonb,
                                    audit_action text, traits jsonb) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  decoy uuid;
begin
  if uid is not null then
    perform auth._send_otp(uid, action, address, s);
    perform auth._audit(audit_action, uid, traits);
    return;
  end if;
  begin
    decoy := auth._decoy_user();
    perform auth._send_otp(decoy, action, address, s - 'hook');
    perform auth._audit(audit_action, decoy, traits);
    raise exception using errcode = 'AUXDC';
  exception when sqlstate 'AUXDC' then
    null;
  end;
  -- The rollback took the decoy's NOTIFY with it; a listener on auth_email (any role may
  -- LISTEN) must still hear one, with an id like a real message's (the sequence moved on).
  if s ->> 'hook' is null then
    perform pg_catalog.pg_notify('auth_email', pg_catalog.currval('auth.email_outbox_id_seq')::text);
  end if;
end
$$;

-- The work of creating a passwordless user (the user, its email identity, the audit
-- entry), done and rolled back: what sign_in_with_otp does for an address that has an
-- account, so that making one for a new address does not stand out by its time.
create function auth._creation_decoy() returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  decoy uuid;
begin
  decoy := auth._decoy_user();
  insert into auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
  values (decoy::text, decoy, pg_catalog.jsonb_build_object('sub', decoy::text, 'email_verified', false,
          'phone_verified', false), 'email', pg_catalog.now(), pg_catalog.now());
  perform auth._audit('user_signedup', decoy, '{"provider": "email", "via": "otp"}');
  raise exception using errcode = 'AUXDC';
exception when sqlstate 'AUXDC' then
  null;
end
$$;

-- sign_up with auth.require_email_confirmation on: the new user gets a confirmation (for
-- the PKCE flow pkce, when given) and no session. Called by auth._sign_up_with_flow
-- (src/users.rs).
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

-- sign_up of an address that has an account, with confirmation on. Unconfirmed: the new
-- password and metadata replace the old (whoever confirms the address owns the account;
-- an earlier sign-up by someone else must not keep a password in it) and a new
-- confirmation is sent. Confirmed: nothing changes and nothing is sent. Either way the
-- answer looks like a new sign-up's (a user with a random id), so sign_up does not reveal
-- who has an account.
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

-- The account functions act on the user of a token this database issued. A trusted
-- third party's token (auth.set_trusted_issuer) reads or changes no local account, even
-- one whose id equals its subject or that is linked to it.
create function auth._require_local_claims() returns void
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  iss text := auth._third_party_issuer();
begin
  if iss is not null then
    raise exception 'bad_jwt: a token of the third-party issuer "%" cannot read or change a local account', pg_catalog.left(iss, 200)
      using errcode = '28000',
            hint = 'Exchange it for a session of this database (auth.sign_in_with_id_token), then use that session''s token.';
  end if;
end
$$;

-- The user behind the request's claims, locked for update when asked; clear errors when
-- there is none.
create function auth._current_user(lock boolean) returns auth.users
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  uid uuid;
  sid uuid;
  u auth.users;
begin
  perform auth._require_local_claims();
  uid := auth.uid();
  sid := auth._claims_session_id();
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

-- The proofs a password change needs beyond the session (GoTrue's settings): the nonce
-- auth.reauthenticate() sent, and the current password. Each is counted before it is
-- checked, like every guess.
create function auth._password_change_proofs(u auth.users, attributes jsonb) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  rules jsonb := auth._password_update_rules();
  o auth.one_time_tokens;
  addr text := pg_catalog.lower(u.email);
begin
  if (rules ->> 'current_password')::boolean and coalesce(u.encrypted_password, '') <> '' then
    if coalesce(attributes ->> 'current_password', '') = '' then
      raise exception 'current_password_required: Current password required when setting new password.'
        using errcode = '22023';
    end if;
    if not auth._current_password_matches(u.id, attributes ->> 'current_password') then
      raise exception 'current_password_mismatch: Current password does not match' using errcode = '28P01';
    end if;
  end if;
  if (rules ->> 'reauthentication')::boolean then
    if coalesce(attributes ->> 'nonce', '') = '' then
      raise exception 'reauthentication_needed: Password update requires reauthentication'
        using errcode = '22023', hint = 'Call auth.reauthenticate() and pass the code it sends as nonce.';
    end if;
    perform auth._attempt_begin(addr);
    select * into o from auth.one_time_tokens t
     where t.user_id = u.id and t.token_type = 'reauthentication_token'
       and t.code_hash = auth._otp_hash(t.id::text || ':' || (attributes ->> 'nonce'))
     for update;
    if not found or o.expires_at <= pg_catalog.now() then
      perform auth._attempt_failed(addr, u.id, 'reauthentication');
      raise exception 'reauthentication_not_valid: Requires reauthentication' using errcode = '28000',
        hint = 'Call auth.reauthenticate() for a new code.';
    end if;
    delete from auth.one_time_tokens t where t.id = o.id;
    perform auth._attempt_succeeded();
  end if;
end
$$;

-- GoTrue's GET /reauthenticate: a six-digit nonce for the signed-in user, sent to their
-- confirmed address (the outbox or the delivery hook, email_action_type reauthentication),
-- which a password change then needs when auth.update_password_require_reauthentication is on.
create function auth.reauthenticate() returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users := auth._current_user(true);
  s jsonb := auth._flow_settings(null);
begin
  if coalesce(u.email, '') = '' or u.email_confirmed_at is null then
    raise exception 'email_not_confirmed: Please verify your email first.' using errcode = '28000';
  end if;
  perform auth._count_email_send(pg_catalog.lower(u.email), s);
  perform auth._send_otp(u.id, 'reauthentication', pg_catalog.lower(u.email), s);
  perform auth._audit('user_reauthenticate_requested', u.id, '{}');
  return '{}'::jsonb;
end
$$;
comment on function auth.reauthenticate() is
  'Send the signed-in user a nonce (six-digit code) that a password change needs when auth.update_password_require_reauthentication is on.';

-- GoTrue's PUT /user: data (merged into user_metadata; a null value removes a key),
-- password (policy-checked; the user's other sessions end), email (a confirmation goes to
-- the new address; the address changes when it is verified; code_challenge and
-- code_challenge_method, as in GoTrue's body, make its link a PKCE flow).
create function auth.update_user(attributes jsonb, redirect_to text default null) returns jsonb
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
   where k not in ('email', 'password', 'data', 'code_challenge', 'code_challenge_method', 'nonce',
                   'current_password') limit 1;
  if found then
    raise exception 'validation_failed: unknown attribute "%" (email, password and data can be changed)',
      pg_catalog.left(bad, 64) using errcode = '22023';
  end if;
  pkce := auth._pkce_flow(attributes ->> 'code_challenge', attributes ->> 'code_challenge_method');
  -- With a verified second factor, the address and the password change only from an aal2
  -- session (GoTrue's rule: a stolen aal1 session cannot take the account over).
  if (attributes ? 'password'
      or (attributes ? 'email' and pg_catalog.lower(attributes ->> 'email') is distinct from pg_catalog.lower(u.email)))
     and exists (select from auth.mfa_factors f where f.user_id = u.id and f.status = 'verified')
     and coalesce((select s.aal::text from auth.sessions s where s.id = auth._claims_session_id()), 'aal1') <> 'aal2' then
    raise exception 'insufficient_aal: AAL2 session is required to update email or password when MFA is enabled.'
      using errcode = '28000';
  end if;
  if attributes ? 'password' then
    perform auth._password_change_proofs(u, attributes);
  end if;
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

-- Send the pending sign-up confirmation or email change again (GoTrue's /resend); the
-- same answer whether or not there was one to send.
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

-- Check a link token or six-digit code and use it up: the work of auth.verify_otp and
-- auth.verify_link up to the session. type: signup, invite, magiclink, recovery,
-- email_change, or email (a code or link of a sign-up, magic link or invitation). email may
-- be NULL for a link token, which alone identifies its row; a link token may carry
-- GoTrue's pkce_ prefix. The address is confirmed (or, for email_change, replaced) and its
-- failed attempts cleared. Returns {"user_id", "method" (the amr method), "audit" (the
-- audit action)}.
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

-- Verify a link token or six-digit code and return a session (GoTrue's POST /verify); see
-- auth._consume_otp. A link token of a PKCE flow (pkce_...) gives a session here too, as
-- GoTrue's POST /verify does.
create function auth.verify_otp(email text, token text, type text) returns jsonb
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

-- An error caught for an answer that must not raise (auth.verify_link): its code (the
-- part of the message before the first colon, as every error of ours starts), its text and
-- its SQLSTATE. A message without a code (an error of Postgres itself) is
-- unexpected_failure.
create function auth._error_json(state text, message text) returns jsonb
language sql immutable parallel safe
return case
  when message ~ '^[a-z][a-z0-9_]*: ' then
    pg_catalog.jsonb_build_object('code', pg_catalog.split_part(message, ':', 1),
                                  'message', pg_catalog.substr(message, pg_catalog.strpos(message, ': ') + 2),
                                  'sqlstate', state)
  else pg_catalog.jsonb_build_object('code', 'unexpected_failure', 'message', message, 'sqlstate', state) end;

-- GoTrue's GET /verify, the target of an email link: the link token is checked and used up
-- as by auth.verify_otp, and the answer says where to send the browser. An ordinary token
-- gives {"redirect_to", "session"}; a PKCE flow's (pkce_...) confirms the same way but
-- gives no session: {"redirect_to", "code"}, the flow state's new auth code, which
-- auth.exchange_code_for_session trades for a session with the verifier. redirect_to is
-- the caller's when it lies within auth.site_url or auth.redirect_allow_list, else
-- auth.site_url. A failure is answered, not raised: {"redirect_to", "error": {"code",
-- "message", "sqlstate"}}, the browser's redirect carries it; nothing of the failed call
-- is kept (a subtransaction), but a wrong token counts toward the lockout as in
-- verify_otp (that count is written by a transaction of its own). Serialization failures
-- and deadlocks are raised: the transaction should be retried.
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

-- GoTrue's POST /token?grant_type=pkce: an auth code from auth.verify_link and the verifier
-- of its flow's challenge give a session whose amr method is the flow's. Single use: the
-- flow state is deleted by the exchange, and by a wrong verifier too (in a transaction of
-- its own, with the failure counted toward the lockout), so a stolen code cannot be tried
-- twice. A code is good for 5 minutes after it was issued. Of two exchanges of one code
-- at once, one gets the session and the other flow_state_not_found.
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
  -- A provider sign-in's tokens, kept sealed when auth.keep_provider_tokens asked for them
  -- (sql/oauth.sql), as GoTrue answers them.
  return session || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
    'provider_token', case when f.provider_access_token is not null
                           then auth._open_provider_token(f.id, 'access', f.provider_access_token) end,
    'provider_refresh_token', case when f.provider_refresh_token is not null
                                   then auth._open_provider_token(f.id, 'refresh', f.provider_refresh_token) end));
end
$$;
comment on function auth.exchange_code_for_session(text, text) is
  'Trade an auth code and its PKCE verifier for a session (GoTrue''s grant_type=pkce); the code works once.';
