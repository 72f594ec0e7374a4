-- Sign-in through OAuth 2 and OpenID Connect providers (GitHub, Google, any OIDC issuer).
-- The redirects and the calls to the provider are the HTTP server's (the database makes no
-- network calls); every rule about users, identities, states and sessions is here:
--   GET /authorize         -> auth.oauth_authorize (or auth.link_identity for a signed-in
--                             user): a single-use state bound to the flow's redirect_to,
--                             PKCE challenge and linking target
--   GET|POST /callback     -> auth.oauth_callback (the state, taken once), then the server
--                             exchanges the code at the provider, then auth.oauth_sign_in
--                             (the provider's user: find or create the user and identity,
--                             start a session or issue a PKCE code)
--   DELETE /user/identities/{id} -> auth.unlink_identity
-- oauth_callback and oauth_sign_in trust what the server read from the provider, so they
-- are the role auth_oauth's alone: the server's login role is granted it, no API role is.

do $$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'auth_oauth') then
    -- The HTTP server acts as this role to finish a provider sign-in.
    create role auth_oauth nologin noinherit;
  end if;
end
$$;

-- A flow between /authorize and /callback. Only the state's SHA-256 is kept: a copy of the
-- table finishes no flow. A separate table rather than auth.flow_state, whose rows are
-- Supabase's PKCE codes (a challenge is required there, an implicit flow has none); a PKCE
-- flow gets its auth.flow_state row when the provider's user is known, with the code.
create table auth.oauth_states (
  id uuid not null primary key,
  state_hash text not null unique,
  provider text not null,
  redirect_to text not null,
  code_challenge text,
  code_challenge_method auth.code_challenge_method,
  -- The signed-in user an identity is being linked to (GET /user/identities/authorize).
  linking_target_id uuid references auth.users (id) on delete cascade,
  created_at timestamptz not null,
  -- When /callback took the state: it is never accepted again.
  used_at timestamptz,
  constraint oauth_states_pkce check ((code_challenge is null) = (code_challenge_method is null))
);
comment on table auth.oauth_states is 'auth_ext: OAuth provider flows between /authorize and /callback (state hashes only).';
create index oauth_states_created_at_idx on auth.oauth_states (created_at);
revoke all on auth.oauth_states from public;
select pg_catalog.pg_extension_config_dump('auth.oauth_states', '');

-- A provider name as the server configures them: lower-case letters, digits, '_'.
create function auth._oauth_provider_name(provider text) returns text
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
declare
  p text := pg_catalog.lower(pg_catalog.btrim(provider));
begin
  if p is null or p = '' then
    raise exception 'validation_failed: Unsupported provider: missing provider' using errcode = '22023';
  end if;
  if p !~ '^[a-z0-9_]{1,32}$' or p in ('email', 'phone', 'anonymous') then
    raise exception 'validation_failed: Unsupported provider: Provider % could not be found', pg_catalog.left(provider, 64)
      using errcode = '22023';
  end if;
  return p;
end
$$;

-- A new flow: its state (256 random bits, returned once; only its hash is stored).
create function auth._oauth_begin(provider text, redirect_to text, code_challenge text, code_challenge_method text,
                                  target uuid)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  s jsonb := auth._flow_settings(redirect_to);
  p text := auth._oauth_provider_name(provider);
  pkce jsonb := auth._pkce_flow(code_challenge, code_challenge_method);
  state text := auth._random_secret();
begin
  if pg_catalog.length(redirect_to) > 2048 then
    raise exception 'validation_failed: redirect_to is too long' using errcode = '22023';
  end if;
  if coalesce(s ->> 'redirect_to', '') = '' then
    raise exception 'validation_failed: no redirect_to within auth.site_url or auth.redirect_allow_list, and no auth.site_url'
      using errcode = '22023', hint = 'Set auth.site_url (ALTER DATABASE ... SET auth.site_url = ''https://app.example'').';
  end if;
  -- Every flow is a row until /callback or auth.cleanup: counted per client address.
  if not auth._rate_limit('oauth_ip:' || coalesce(auth._client_ip(), 'unknown'),
                          (s ->> 'oauth_rate_limit')::integer, 3600) then
    raise exception 'over_request_rate_limit: Too many sign-in attempts from this address; try again later'
      using errcode = '53400';
  end if;
  insert into auth.oauth_states (id, state_hash, provider, redirect_to, code_challenge, code_challenge_method,
                                 linking_target_id, created_at)
  values (pg_catalog.gen_random_uuid(), auth._sha256_hex(state), p, s ->> 'redirect_to', pkce ->> 'code_challenge',
          (pkce ->> 'code_challenge_method')::auth.code_challenge_method, target, pg_catalog.now());
  return pg_catalog.jsonb_build_object('provider', p, 'state', state, 'redirect_to', s ->> 'redirect_to');
end
$$;

-- GoTrue's GET /authorize: a flow to sign in with `provider` (the server knows which
-- providers it has; an unknown name is its 400). Returns {provider, state, redirect_to}:
-- the server sends the browser to the provider with `state`.
create function auth.oauth_authorize(provider text, redirect_to text default null, code_challenge text default null,
                                     code_challenge_method text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return auth._oauth_begin(provider, redirect_to, code_challenge, code_challenge_method, null);
end
$$;
comment on function auth.oauth_authorize(text, text, text, text) is
  'Start a sign-in with an OAuth/OIDC provider (GET /authorize): {provider, state, redirect_to}; the state is single-use and expires in 10 minutes.';

-- GoTrue's GET /user/identities/authorize: a flow that links the provider's identity to the
-- signed-in caller (auth.manual_linking_enabled, off by default as on Supabase). An
-- anonymous user becomes a permanent one this way.
create function auth.link_identity(provider text, redirect_to text default null, code_challenge text default null,
                                   code_challenge_method text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users;
begin
  if not (auth._flow_settings(null) ->> 'manual_linking')::boolean then
    raise exception 'manual_linking_disabled: Manual linking is disabled'
      using errcode = '28000', hint = 'Turn auth.manual_linking_enabled on.';
  end if;
  u := auth._current_user(false);
  if u.banned_until > pg_catalog.now() then
    raise exception 'user_banned: User is banned' using errcode = '28000';
  end if;
  return auth._oauth_begin(provider, redirect_to, code_challenge, code_challenge_method, u.id);
end
$$;
comment on function auth.link_identity(text, text, text, text) is
  'Start linking an OAuth/OIDC identity to the signed-in user (GET /user/identities/authorize); needs auth.manual_linking_enabled.';

-- The error object of a redirect: GoTrue's code and message (auth._error_json's shape).
create function auth._oauth_error(code text, message text) returns jsonb
language sql immutable parallel safe
return pg_catalog.jsonb_build_object('code', code, 'message', message, 'sqlstate', '28000');

-- GoTrue's GET|POST /callback, first step (role auth_oauth): take the state once. Returns
-- {flow, provider, redirect_to} to go on with, or {redirect_to, error} to send the browser
-- back with (the site URL when the state says nothing). The provider's own error (the user
-- denied, ...) comes back in `error` / `error_description` and ends the flow the same way.
-- The state is looked up by its SHA-256: the comparison is of hashes, never of the secret.
create function auth.oauth_callback(state text, error text default null, error_description text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  site text := auth._flow_settings(null) ->> 'site_url';
  f auth.oauth_states;
  name text;
  description text;
begin
  if state is null or state = '' then
    return pg_catalog.jsonb_build_object('redirect_to', site,
      'error', auth._oauth_error('bad_oauth_state', 'OAuth state parameter missing'));
  end if;
  if pg_catalog.length(state) > 256 then
    return pg_catalog.jsonb_build_object('redirect_to', site,
      'error', auth._oauth_error('bad_oauth_state', 'OAuth callback with invalid state'));
  end if;
  update auth.oauth_states x set used_at = pg_catalog.now()
   where x.state_hash = auth._sha256_hex(oauth_callback.state) and x.used_at is null
  returning * into f;
  if not found then
    return pg_catalog.jsonb_build_object('redirect_to', site,
      'error', auth._oauth_error('bad_oauth_state', 'OAuth callback with invalid state'));
  end if;
  if f.created_at + interval '10 minutes' <= pg_catalog.now() then
    delete from auth.oauth_states x where x.id = f.id;
    return pg_catalog.jsonb_build_object('redirect_to', f.redirect_to,
      'error', auth._oauth_error('bad_oauth_state', 'OAuth state has expired'));
  end if;
  if error is not null or error_description is not null then
    delete from auth.oauth_states x where x.id = f.id;
    -- The provider's words, bounded and printable: they go into a URL.
    name := case when error ~ '^[a-z_]{1,64}$' then error else 'server_error' end;
    description := pg_catalog.left(pg_catalog.regexp_replace(coalesce(error_description, error), '[[:cntrl:]]', ' ', 'g'), 500);
    return pg_catalog.jsonb_build_object('redirect_to', f.redirect_to, 'error',
      pg_catalog.jsonb_build_object('code', name, 'message', description, 'sqlstate', '28000', 'oauth', name));
  end if;
  return pg_catalog.jsonb_build_object('flow', f.id, 'provider', f.provider, 'redirect_to', f.redirect_to);
end
$$;
comment on function auth.oauth_callback(text, text, text) is
  'The HTTP server''s /callback, first step (role auth_oauth): take the flow''s state once; {flow, provider, redirect_to} or {redirect_to, error}.';

-- The user of an external identity (provider, sub): found by the identity, else the
-- linking target, else linked by a verified email (auth.id_token_link_by_email), else
-- created. An address the provider did not verify is never looked up and never given to a
-- user (it stays in the identity's data): it could be anyone's, and an account holding it
-- would squat it or tell who has an account. Shared by the OAuth callback and ID-token sign-in. A user linked by email whose
-- address was never confirmed loses its password, identities and sessions: whoever made
-- them never proved the address (GoTrue's rule; the provider just did). Returns the user's id and whether it is new.
create function auth._external_identity(pname text, sub text, addr text, verified boolean, data jsonb,
                                        target uuid, settings jsonb,
                                        out user_id uuid, out created boolean)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  owner uuid;
  u auth.users;
begin
  created := false;
  select i.user_id into owner from auth.identities i where i.provider = pname and i.provider_id = sub for update;
  if owner is not null then
    if target is not null and owner <> target then
      raise exception 'identity_already_exists: Identity is already linked to another user'
        using errcode = '23505';
    end if;
    update auth.identities i set identity_data = data, last_sign_in_at = pg_catalog.now(), updated_at = pg_catalog.now()
     where i.provider = pname and i.provider_id = sub;
    user_id := owner;
    return;
  end if;
  -- With confirmations required (auth.require_email_confirmation), no new user from an
  -- address the provider did not verify, as GoTrue.
  if target is null and not verified and addr is not null and (settings ->> 'confirm')::boolean then
    raise exception 'provider_email_needs_verification: Unverified email with %. Verify the address with % and sign in again',
      pg_catalog.left(pname, 200), pg_catalog.left(pname, 200) using errcode = '28000';
  end if;
  if target is not null then
    user_id := target;
  elsif addr is not null and verified then
    select x.id into user_id from auth.users x
     where pg_catalog.lower(x.email) = addr and not x.is_sso_user and x.deleted_at is null;
    if user_id is not null and not (settings ->> 'id_token_link_by_email')::boolean then
      raise exception 'email_exists: A user with this email address has already been registered'
        using errcode = '23505',
              hint = 'Sign in with that account first; linking needs a verified email and auth.id_token_link_by_email.';
    end if;
    -- Nobody proved the address of an unconfirmed user: whoever made it (with a password, or
    -- a provider or an ID token that did not verify it) loses every way in, not only the
    -- password: its identities, sessions and factors go, and the verified identity takes
    -- the account over (GoTrue's RemoveUnconfirmedIdentities).
    if user_id is not null
       and exists (select from auth.users x where x.id = user_id and x.email_confirmed_at is null) then
      update auth.users x
         set encrypted_password = '',
             raw_app_meta_data = coalesce(x.raw_app_meta_data, '{}'::jsonb) - array['provider', 'providers']
       where x.id = user_id;
      delete from auth.identities i where i.user_id = _external_identity.user_id;
      delete from auth.sessions s where s.user_id = _external_identity.user_id;
      delete from auth.mfa_factors f where f.user_id = _external_identity.user_id;
    end if;
  end if;
  if user_id is null then
    insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                            raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at, is_anonymous)
    values ('00000000-0000-0000-0000-000000000000', pg_catalog.gen_random_uuid(), 'authenticated', 'authenticated',
            case when verified then addr end, '', case when verified then pg_catalog.now() end,
            pg_catalog.jsonb_build_object('provider', pname, 'providers', pg_catalog.jsonb_build_array(pname)),
            data, false, pg_catalog.now(), pg_catalog.now(), false)
    returning id into user_id;
    created := true;
  else
    select * into strict u from auth.users x where x.id = user_id for update;
    -- An anonymous user that links an identity becomes permanent, with the identity's
    -- verified address when it is free.
    if u.is_anonymous then
      if addr is not null and verified
         and exists (select from auth.users x where pg_catalog.lower(x.email) = addr and x.id <> u.id
                                                  and x.deleted_at is null) then
        raise exception 'email_exists: A user with this email address has already been registered'
          using errcode = '23505';
      end if;
      update auth.users x
         set is_anonymous = false,
             email = case when verified then addr else x.email end,
             email_confirmed_at = case when verified and addr is not null then pg_catalog.now() else x.email_confirmed_at end,
             raw_app_meta_data = pg_catalog.jsonb_build_object('provider', pname, 'providers', pg_catalog.jsonb_build_array(pname))
       where x.id = u.id;
    else
      update auth.users x set raw_app_meta_data = auth._add_provider(x.raw_app_meta_data, pname) where x.id = u.id;
    end if;
  end if;
  insert into auth.identities (provider_id, user_id, identity_data, provider, last_sign_in_at, created_at, updated_at)
  values (sub, _external_identity.user_id, data, pname, pg_catalog.now(), pg_catalog.now(), pg_catalog.now());
end
$$;

-- The user of an external sign-in, locked, made ready: refused when deleted or banned; its
-- sign-in time set and its address confirmed when the provider verified that address.
create function auth._external_sign_in_user(uid uuid, addr text, verified boolean) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users;
begin
  select * into strict u from auth.users x where x.id = uid for update;
  if u.deleted_at is not null then
    raise exception 'user_not_found: the user of this identity has been deleted' using errcode = '28000';
  end if;
  if u.banned_until > pg_catalog.now() then
    raise exception 'user_banned: User is banned' using errcode = '28000';
  end if;
  update auth.users x
     set last_sign_in_at = pg_catalog.now(), updated_at = pg_catalog.now(),
         email_confirmed_at = case when verified and pg_catalog.lower(x.email) = addr
                                   then coalesce(x.email_confirmed_at, pg_catalog.now()) else x.email_confirmed_at end
   where x.id = uid;
end
$$;

-- GoTrue's /callback, second step (role auth_oauth): the provider's user, as the server
-- read it, signs in. identity: {"subject", "email", "email_verified", "identity_data",
-- "provider_token", "provider_refresh_token"}. Everything in it is validated as any
-- caller's input is. Returns {redirect_to, session, provider_token, provider_refresh_token}
-- (implicit flow), {redirect_to, code} (PKCE: exchanged with auth.exchange_code_for_session)
-- or {redirect_to, error}; never raises for a bad identity (nothing of it is kept).
create function auth.oauth_sign_in(flow uuid, identity jsonb) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  s jsonb := auth._flow_settings(null);
  f auth.oauth_states;
  sub text;
  addr text;
  verified boolean;
  data jsonb;
  ptoken text;
  prefresh text;
  r record;
  code text;
  fid uuid;
  answer jsonb;
  err_state text;
  err_text text;
begin
  delete from auth.oauth_states x where x.id = flow and x.used_at is not null returning * into f;
  if not found then
    return pg_catalog.jsonb_build_object('redirect_to', s ->> 'site_url',
      'error', auth._oauth_error('bad_oauth_state', 'OAuth callback with invalid state'));
  end if;
  begin
    if f.used_at + interval '5 minutes' <= pg_catalog.now() then
      raise exception 'bad_oauth_state: OAuth state has expired' using errcode = '28000';
    end if;
    if identity is null or pg_catalog.jsonb_typeof(identity) <> 'object' then
      raise exception 'bad_oauth_callback: the provider''s user is not a JSON object' using errcode = '22023';
    end if;
    sub := identity ->> 'subject';
    if sub is null or sub = '' or pg_catalog.length(sub) > 255 or sub ~ '[[:cntrl:]]' then
      raise exception 'bad_oauth_callback: the provider''s user has no usable id' using errcode = '22023';
    end if;
    if pg_catalog.jsonb_typeof(identity -> 'email') = 'string' and identity ->> 'email' <> '' then
      addr := auth._normalize_email(identity ->> 'email');
    end if;
    verified := addr is not null and coalesce(identity -> 'email_verified' = 'true'::jsonb, false);
    data := coalesce(identity -> 'identity_data', '{}'::jsonb);
    if pg_catalog.jsonb_typeof(data) <> 'object' then
      raise exception 'bad_oauth_callback: identity_data must be a JSON object' using errcode = '22023';
    end if;
    -- Stored as identity data and, for a new user, as user metadata: the same rules.
    perform auth._check_data(data, 'the provider''s user');
    ptoken := nullif(identity ->> 'provider_token', '');
    prefresh := nullif(identity ->> 'provider_refresh_token', '');
    if pg_catalog.length(ptoken) > 8192 or pg_catalog.length(prefresh) > 8192 then
      raise exception 'bad_oauth_callback: the provider''s tokens are too long' using errcode = '22023';
    end if;
    r := auth._external_identity(f.provider, sub, addr, verified, data, f.linking_target_id, s);
    perform auth._external_sign_in_user(r.user_id, addr, verified);
    if f.code_challenge is not null then
      -- 256 random bits; only their SHA-256 is kept. The provider's tokens only when a
      -- setting asks, sealed (auth.exchange_code_for_session opens them once).
      code := auth._random_secret();
      fid := pg_catalog.gen_random_uuid();
      insert into auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge, provider_type,
                                   provider_access_token, provider_refresh_token, created_at, updated_at,
                                   authentication_method, auth_code_issued_at)
      values (fid, r.user_id, auth._sha256_hex(code), f.code_challenge_method, f.code_challenge, f.provider,
              case when (s ->> 'keep_provider_tokens')::boolean and ptoken is not null
                   then auth._seal_provider_token(fid, 'access', ptoken) end,
              case when (s ->> 'keep_provider_tokens')::boolean and prefresh is not null
                   then auth._seal_provider_token(fid, 'refresh', prefresh) end,
              pg_catalog.now(), pg_catalog.now(), 'oauth', pg_catalog.now());
      answer := pg_catalog.jsonb_build_object('code', code);
    else
      answer := pg_catalog.jsonb_build_object('session', auth._start_session(r.user_id, 'oauth'))
                || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                     'provider_token', ptoken, 'provider_refresh_token', prefresh));
    end if;
    perform auth._audit(case when r.created then 'user_signedup'
                             when f.linking_target_id is not null then 'identity_linked' else 'login' end,
                        r.user_id, pg_catalog.jsonb_build_object('provider', f.provider)
                              || case when f.code_challenge is not null then '{"flow": "pkce"}'::jsonb else '{}'::jsonb end);
  exception
    when serialization_failure or deadlock_detected then
      raise;
    when others then
      get stacked diagnostics err_state = returned_sqlstate, err_text = message_text;
      return pg_catalog.jsonb_build_object('redirect_to', f.redirect_to, 'error', auth._error_json(err_state, err_text));
  end;
  return pg_catalog.jsonb_build_object('redirect_to', f.redirect_to) || answer;
end
$$;
comment on function auth.oauth_sign_in(uuid, jsonb) is
  'The HTTP server''s /callback, second step (role auth_oauth): sign in the provider''s user; {redirect_to, session} or {redirect_to, code} (PKCE) or {redirect_to, error}.';

-- GoTrue's DELETE /user/identities/{identity_id}: the caller's own identity, never its last
-- one (auth.manual_linking_enabled). When the user's address came from that identity, the
-- address of another remaining identity takes its place (GoTrue's rule).
create function auth.unlink_identity(identity_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users;
  i auth.identities;
  other text;
begin
  if not (auth._flow_settings(null) ->> 'manual_linking')::boolean then
    raise exception 'manual_linking_disabled: Manual linking is disabled'
      using errcode = '28000', hint = 'Turn auth.manual_linking_enabled on.';
  end if;
  u := auth._current_user(true);
  if u.is_anonymous then
    raise exception 'no_authorization: Anonymous users cannot unlink identities' using errcode = '28000';
  end if;
  select * into i from auth.identities x where x.id = unlink_identity.identity_id and x.user_id = u.id;
  if not found then
    raise exception 'identity_not_found: Identity doesn''t exist' using errcode = 'P0002';
  end if;
  if (select pg_catalog.count(*) from auth.identities x where x.user_id = u.id) <= 1 then
    raise exception 'single_identity_not_deletable: User must have at least 1 identity after unlinking'
      using errcode = '22023';
  end if;
  delete from auth.identities x where x.id = i.id;
  if u.email is not null and not exists (select from auth.identities x
                                          where x.user_id = u.id and pg_catalog.lower(x.email) = pg_catalog.lower(u.email)) then
    -- Only an address that identity's provider verified: an unverified one (GitHub lists
    -- any address its user typed) would become this user's, confirmed. None: no address.
    select pg_catalog.lower(x.email) into other from auth.identities x
     where x.user_id = u.id and x.email is not null
       and x.identity_data -> 'email_verified' in ('true'::jsonb, '"true"'::jsonb)
     order by x.created_at limit 1;
    begin
      update auth.users x
         set email = other, email_confirmed_at = case when other is null then null else x.email_confirmed_at end
       where x.id = u.id;
    exception when unique_violation then
      raise exception 'email_conflict_identity_not_deletable: Unable to unlink identity due to email conflict'
        using errcode = '23505';
    end;
  end if;
  update auth.users x
     set raw_app_meta_data = coalesce(x.raw_app_meta_data, '{}'::jsonb) || pg_catalog.jsonb_build_object(
           'provider', (select y.provider from auth.identities y where y.user_id = u.id order by y.created_at limit 1),
           'providers', (select pg_catalog.jsonb_agg(distinct y.provider) from auth.identities y where y.user_id = u.id)),
         updated_at = pg_catalog.now()
   where x.id = u.id;
  perform auth._audit('identity_unlinked', u.id, pg_catalog.jsonb_build_object('provider', i.provider));
  return '{}'::jsonb;
end
$$;
comment on function auth.unlink_identity(uuid) is
  'Remove one of the signed-in user''s identities (never the last); needs auth.manual_linking_enabled.';
