-- auth_ext admin API (Supabase's /admin/users and generate_link), anonymous sign-in and
-- sign-in with an OIDC ID token. The admin functions are granted to service_role alone
-- (sql/finalize.sql); every one is SECURITY DEFINER with search_path pinned and writes an
-- audit entry with the admin (the calling role) as actor. Bodies are plpgsql because they
-- call functions created later in the install script.

-- Audit an admin action on a user.
create function auth._audit_user_admin(action text, u auth.users, traits jsonb) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  perform auth._audit_admin(action, traits || pg_catalog.jsonb_build_object(
    'user_id', u.id, 'user_email', u.email));
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
  hash text := '';
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
  -- Hashed before the insert: a hash may wait for a place, and must not wait holding the
  -- new row's locks (a concurrent insert of the address would wait behind it).
  if attributes ? 'password' then
    hash := auth._hash_password(attributes ->> 'password');
  end if;
  insert into auth.users (instance_id, id, aud, role, email, encrypted_password, email_confirmed_at,
                          raw_app_meta_data, raw_user_meta_data, is_super_admin, created_at, updated_at,
                          banned_until, is_anonymous)
  values ('00000000-0000-0000-0000-000000000000', uid, 'authenticated', 'authenticated', addr,
          hash,
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
  u auth.users := auth._admin_user(id, false);
  addr text;
  changed text[] := '{}';
  hash text;
begin
  perform auth._check_attributes(attributes,
    '{email,password,email_confirm,user_metadata,app_metadata,ban_duration}');
  -- Hashed before the row is locked (a hash may wait for a place).
  if attributes ? 'password' then
    hash := auth._hash_password(attributes ->> 'password');
  end if;
  u := auth._admin_user(id, true);
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
  if hash is not null then
    update auth.users x set encrypted_password = hash where x.id = u.id;
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
  r record;
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
    if claims ->> 'nonce' is null or (claims ->> 'nonce' <> nonce and claims ->> 'nonce' <> auth._sha256_hex(nonce)) then
      raise exception 'bad_jwt: the nonce does not match the ID token''s' using errcode = '28000';
    end if;
  elsif claims ? 'nonce' then
    raise exception 'bad_jwt: the ID token carries a nonce; pass the nonce it was requested with'
      using errcode = '28000';
  end if;
  addr := pg_catalog.lower(claims ->> 'email');
  verified := coalesce(claims -> 'email_verified' in ('true'::jsonb, '"true"'::jsonb), false);
  data := claims - array['aud', 'exp', 'iat', 'nbf', 'nonce', 'at_hash', 'c_hash', 'auth_time', 'azp', 'jti'];
  -- Stored as identity data and, for a new user, as user metadata: the same rules.
  perform auth._check_data(data, 'the ID token''s claims');
  r := auth._external_identity(pname, sub, addr, verified, data, null, s);
  uid := r.user_id;
  created := r.created;
  perform auth._external_sign_in_user(uid, addr, verified);
  session := auth._start_session(uid, 'oauth');
  perform auth._audit(case when created then 'user_signedup' else 'login' end, uid,
                      pg_catalog.jsonb_build_object('provider', pname));
  return session;
end
$$;
comment on function auth.sign_in_with_id_token(text, text, text) is
  'Sign in with an OIDC ID token of a trusted issuer (signInWithIdToken); creates or links the user; amr oauth.';
