-- auth_ext: SQL glue, the initial key, and privileges. Runs after every Rust function exists.

-- Timestamps in user objects are UTC RFC 3339, as GoTrue writes them, whatever the
-- session's TimeZone. SQL-standard bodies (RETURN, BEGIN ATOMIC) are resolved when they
-- are created, so no caller's search_path can reach them, and without a SET clause the
-- planner can inline them into the statements that use them.
create function auth._iso(t timestamptz) returns text
language sql immutable parallel safe
return pg_catalog.to_char(t at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"');

-- GoTrue's factor object (MFA, sql/mfa.sql).
create function auth._factor_json(f auth.mfa_factors) returns jsonb
language sql stable parallel safe
begin atomic
  select pg_catalog.jsonb_build_object(
    'id', f.id,
    'friendly_name', coalesce(f.friendly_name, ''),
    'factor_type', f.factor_type::text,
    'status', f.status::text,
    'created_at', auth._iso(f.created_at),
    'updated_at', auth._iso(f.updated_at))
  || pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
    'last_challenged_at', auth._iso(f.last_challenged_at)));
end;

-- The `user` object of a GoTrue session, built from one row.
create function auth._user_json(u auth.users) returns jsonb
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
    'banned_until', auth._iso(u.banned_until)))
  -- The user's MFA factors, as GoTrue lists them (omitted when there are none).
  || coalesce((select pg_catalog.jsonb_build_object('factors',
                 pg_catalog.jsonb_agg(auth._factor_json(f) order by f.created_at))
                 from auth.mfa_factors f where f.user_id = u.id having pg_catalog.count(*) > 0), '{}'::jsonb);
end;

-- Keys: one in_use key signs, whatever its algorithm. A restore (pg_dump/pg_restore) first
-- runs CREATE EXTENSION, which generates a fresh key, and then copies the dumped keys in;
-- the dumped in_use key must win, or every token issued before the dump would stop
-- verifying. So an incoming in_use key replaces a generated one and demotes another.
create function auth._signing_keys_before_insert() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if new.state = 'in_use' then
    delete from auth.signing_keys k
     where k.state = 'in_use' and k.generated;
    update auth.signing_keys k
       set state = 'previously_used', updated_at = pg_catalog.now()
     where k.state = 'in_use';
  end if;
  return new;
end
$$;

create trigger signing_keys_before_insert
  before insert on auth.signing_keys
  for each row execute function auth._signing_keys_before_insert();

-- Every change to the keys or the trusted issuers, however it is made, tells every backend
-- to drop its cached keys and verified tokens (a relcache invalidation, delivered at commit).
create function auth._signing_keys_changed() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  perform auth._invalidate_key_cache();
  return null;
end
$$;

create trigger signing_keys_changed
  after insert or update or delete or truncate on auth.signing_keys
  for each statement execute function auth._signing_keys_changed();

create trigger trusted_issuers_changed
  after insert or update or delete or truncate on auth.trusted_issuers
  for each statement execute function auth._signing_keys_changed();

-- The secret keys: a restore runs CREATE EXTENSION (which generates a fresh key) and then
-- copies the dumped keys in; the dumped key must win, or every code sent before the dump
-- would stop verifying. Any change drops the keys cached by every backend.
create function auth._secret_keys_before_insert() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from auth.secret_keys k where k.purpose = new.purpose;
  return new;
end
$$;

create trigger secret_keys_before_insert
  before insert on auth.secret_keys
  for each row execute function auth._secret_keys_before_insert();

create trigger secret_keys_changed
  after insert or update or delete or truncate on auth.secret_keys
  for each statement execute function auth._signing_keys_changed();

insert into auth.secret_keys (purpose, secret) values ('otp', auth._random_secret()), ('mfa', auth._random_secret());

-- The zero-configuration secret: 256 random bits as 43 base64url characters.
insert into auth.signing_keys (algorithm, state, secret, generated)
values ('HS256', 'in_use', auth._random_secret(), true);

-- A key as the management functions show it: never the private part.
create function auth._signing_key_json(k auth.signing_keys) returns jsonb
language sql stable parallel safe
begin atomic
  select pg_catalog.jsonb_build_object(
    'kid', k.kid,
    'algorithm', k.algorithm,
    'state', k.state,
    'public_jwk', k.public_jwk,
    'created_at', auth._iso(k.created_at),
    'updated_at', auth._iso(k.updated_at));
end;

-- Audit a key or issuer change; the actor is the login role (no user is involved).
create function auth._audit_admin(action text, traits jsonb) returns void
language sql volatile
set search_path = pg_catalog, pg_temp
return auth._audit(action, '00000000-0000-0000-0000-000000000000'::uuid,
                   traits || pg_catalog.jsonb_build_object('session_user', pg_catalog.session_user(),
                                                           'actor_role', auth._calling_role()));

-- A new standby key: generated (private_key NULL) or imported. Owner only; reached through
-- the SECURITY DEFINER functions below.
create function auth._add_signing_key(algorithm text, private_key text, kid text) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  k text := coalesce(kid, pg_catalog.gen_random_uuid()::text);
  m jsonb;
  r auth.signing_keys;
begin
  if k = '' or pg_catalog.length(k) > 200 then
    raise exception 'validation_failed: kid must be 1 to 200 characters' using errcode = '22023';
  end if;
  if exists (select from auth.signing_keys s where s.kid = k) then
    raise exception 'validation_failed: a signing key with kid "%" already exists', k
      using errcode = '23505';
  end if;
  m := auth._new_key_material(algorithm, private_key, k);
  insert into auth.signing_keys (kid, algorithm, state, secret, public_jwk)
  values (k, m ->> 'algorithm', 'standby', m ->> 'secret', m -> 'public_jwk')
  returning * into r;
  perform auth._audit_admin(
    case when private_key is null then 'signing_key_created' else 'signing_key_imported' end,
    pg_catalog.jsonb_build_object('kid', r.kid, 'algorithm', r.algorithm));
  return auth._signing_key_json(r);
end
$$;

-- SECURITY DEFINER: auth.signing_keys is the owner's alone; service_role manages keys
-- through these functions and never sees a private part.
create function auth.create_signing_key(algorithm text default 'ES256', kid text default null)
returns jsonb
language sql volatile security definer
set search_path = pg_catalog, pg_temp
return auth._add_signing_key(algorithm, null, kid);
comment on function auth.create_signing_key(text, text) is
  'Generate a standby signing key (ES256, RS256, EdDSA or HS256) inside the database; returns its kid and public JWK.';

create function auth.import_signing_key(private_key text, algorithm text default null, kid text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  if private_key is null then
    raise exception 'validation_failed: private_key is required (PEM or private JWK)'
      using errcode = '22023';
  end if;
  return auth._add_signing_key(algorithm, private_key, kid);
end
$$;
comment on function auth.import_signing_key(text, text, text) is
  'Import a private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC; or a private JWK) as a standby signing key.';

-- The key named kid, locked against concurrent key changes: one rotation at a time (two
-- concurrent promotions would both demote and then race on the one-in_use index).
create function auth._lock_signing_key(kid text) returns auth.signing_keys
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  r auth.signing_keys;
begin
  lock table auth.signing_keys in share row exclusive mode;
  select * into r from auth.signing_keys s where s.kid = _lock_signing_key.kid;
  if not found then
    raise exception 'validation_failed: no signing key with kid "%"', pg_catalog.left(kid, 200)
      using errcode = '22023';
  end if;
  return r;
end
$$;

create function auth.promote_signing_key(kid text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  r auth.signing_keys;
begin
  r := auth._lock_signing_key(kid);
  if r.state = 'revoked' then
    raise exception 'validation_failed: signing key "%" is revoked and cannot be used again', r.kid
      using errcode = '55000';
  end if;
  if r.state <> 'in_use' then
    update auth.signing_keys s
       set state = 'previously_used', updated_at = pg_catalog.now()
     where s.state = 'in_use';
    update auth.signing_keys s
       set state = 'in_use', updated_at = pg_catalog.now()
     where s.id = r.id
    returning * into r;
    perform auth._audit_admin('signing_key_promoted',
      pg_catalog.jsonb_build_object('kid', r.kid, 'algorithm', r.algorithm));
  end if;
  return auth._signing_key_json(r);
end
$$;
comment on function auth.promote_signing_key(text) is
  'Make a key the one that signs; the key in use before becomes previously_used and still verifies.';

create function auth.revoke_signing_key(kid text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  r auth.signing_keys;
begin
  r := auth._lock_signing_key(kid);
  if r.state = 'in_use' then
    raise exception 'validation_failed: signing key "%" is in use; promote another key first', r.kid
      using errcode = '55000';
  end if;
  if r.state <> 'revoked' then
    -- The private part is destroyed: a revoked key is never used again.
    update auth.signing_keys s
       set state = 'revoked', secret = null, updated_at = pg_catalog.now()
     where s.id = r.id
    returning * into r;
    perform auth._audit_admin('signing_key_revoked',
      pg_catalog.jsonb_build_object('kid', r.kid, 'algorithm', r.algorithm));
  end if;
  return auth._signing_key_json(r);
end
$$;
comment on function auth.revoke_signing_key(text) is
  'Revoke a key that is not in use: its tokens stop verifying at once and its private part is erased.';

create function auth.list_signing_keys()
returns table (kid text, algorithm text, state text, public_jwk jsonb,
               created_at timestamptz, updated_at timestamptz)
language sql stable security definer
set search_path = pg_catalog, pg_temp
begin atomic
  select k.kid, k.algorithm, k.state, k.public_jwk, k.created_at, k.updated_at
    from auth.signing_keys k
   order by k.created_at, k.kid;
end;
comment on function auth.list_signing_keys() is
  'Every signing key with its state and public JWK; never a private part or secret.';

-- Owner or superuser only (no grant): share one HS256 secret with PostgREST's jwt-secret.
-- The in_use HS256 key takes the new secret; when another algorithm is in use, a new
-- HS256 key becomes the in_use one and the other previously_used.
create function auth.set_jwt_secret(secret text) returns void
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if secret is null or pg_catalog.length(secret) < 32 then
    -- Never echo the secret, not even in part.
    raise exception 'validation_failed: the JWT secret must be at least 32 characters'
      using errcode = '22023';
  end if;
  update auth.signing_keys
     set secret = set_jwt_secret.secret, generated = false, updated_at = pg_catalog.now()
   where algorithm = 'HS256' and state = 'in_use';
  if not found then
    insert into auth.signing_keys (algorithm, state, secret)
    values ('HS256', 'in_use', set_jwt_secret.secret);
  end if;
end
$$;
comment on function auth.set_jwt_secret(text) is
  'Replace the HS256 signing secret (at least 32 characters). Owner or superuser only.';

-- Why a role may not be the role of a third party's token, nor run hooks: NULL when it
-- may. Refused: superusers, BYPASSRLS, CREATEROLE (which can grant itself memberships) and
-- REPLICATION roles; members of the extension owner, of a role that reads all data, the
-- server's files or other sessions' statements, or of any role refused for the first
-- reasons; roles with CREATE on the auth schema or any privilege on a table or sequence of
-- it (directly or by inheritance); and roles that may execute an auth function signed-in
-- users may not.
create function auth._role_refusal(role_name text) returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
  r record;
  owner oid := (select c.relowner from pg_catalog.pg_class c where c.oid = 'auth.users'::pg_catalog.regclass);
  rel text;
begin
  select a.oid, a.rolsuper, a.rolbypassrls, a.rolcreaterole, a.rolreplication into r
    from pg_catalog.pg_roles a where a.rolname = role_name;
  if not found then
    return 'does not exist';
  end if;
  if r.rolsuper then
    return 'is a superuser';
  end if;
  if r.rolbypassrls then
    return 'bypasses row level security';
  end if;
  if r.rolcreaterole then
    return 'has CREATEROLE (it can grant itself other roles)';
  end if;
  if r.rolreplication then
    return 'has REPLICATION (a replication slot reads every change, keys included)';
  end if;
  if pg_catalog.pg_has_role(r.oid, owner, 'MEMBER') then
    return 'is, or is a member of, the owner of the auth tables';
  end if;
  -- Members of these read or write every table or the server's files (the keys are in
  -- them), even when they do not inherit: membership is what a SET ROLE needs.
  select a.rolname into rel from pg_catalog.pg_roles a
   where a.rolname in ('pg_read_all_data', 'pg_write_all_data', 'pg_read_server_files',
                       'pg_write_server_files', 'pg_execute_server_program',
                       -- statement texts and other sessions (sign-in calls, cancels)
                       'pg_read_all_stats', 'pg_monitor', 'pg_signal_backend')
     and pg_catalog.pg_has_role(r.oid, a.oid, 'MEMBER')
   order by 1 limit 1;
  if rel is not null then
    return pg_catalog.format('is a member of %s', rel);
  end if;
  -- Likewise of a role that is any of the above.
  select a.rolname into rel from pg_catalog.pg_roles a
   where a.oid <> r.oid and (a.rolsuper or a.rolbypassrls or a.rolcreaterole or a.rolreplication)
     and pg_catalog.pg_has_role(r.oid, a.oid, 'MEMBER')
   order by 1 limit 1;
  if rel is not null then
    return pg_catalog.format('is a member of %s, a superuser, BYPASSRLS, CREATEROLE or REPLICATION role', rel);
  end if;
  if pg_catalog.has_schema_privilege(r.oid, 'auth', 'CREATE') then
    return 'may create objects in the auth schema';
  end if;
  if pg_catalog.pg_has_role(r.oid, 'pg_database_owner', 'MEMBER') then
    return 'owns the database';
  end if;
  -- Functions of the server whose EXECUTE is not PUBLIC's read its files or run programs
  -- (pg_read_binary_file, lo_import, ...): the keys are in those files.
  select p.oid::pg_catalog.regprocedure::pg_catalog.text into rel from pg_catalog.pg_proc p
   where p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace and p.proacl is not null
     and pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')
     and not pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')
   order by 1 limit 1;
  if rel is not null then
    return pg_catalog.format('may execute %s', rel);
  end if;
  -- A foreign server reaches other databases, this one included, with other rights.
  select s.srvname::pg_catalog.text into rel from pg_catalog.pg_foreign_server s
   where pg_catalog.has_server_privilege(r.oid, s.oid, 'USAGE')
   order by 1 limit 1;
  if rel is not null then
    return pg_catalog.format('may use the foreign server %s', rel);
  end if;
  -- And a role that may call what signed-in users may not (the admin API, key management).
  select p.oid::pg_catalog.regprocedure::pg_catalog.text into rel from pg_catalog.pg_proc p
   where p.pronamespace = 'auth'::pg_catalog.regnamespace
     and pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')
     and not pg_catalog.has_function_privilege('authenticated', p.oid, 'EXECUTE')
   order by 1 limit 1;
  if rel is not null then
    return pg_catalog.format('may execute %s', rel);
  end if;
  select c.oid::pg_catalog.regclass::pg_catalog.text into rel
    from pg_catalog.pg_class c
   where c.relnamespace = 'auth'::pg_catalog.regnamespace
     and case when c.relkind = 'S'
              then pg_catalog.has_sequence_privilege(r.oid, c.oid, 'USAGE, SELECT, UPDATE')
              when c.relkind in ('r', 'p', 'v', 'm', 'f')
              then pg_catalog.has_any_column_privilege(r.oid, c.oid, 'SELECT, INSERT, UPDATE, REFERENCES')
                   or pg_catalog.has_table_privilege(r.oid, c.oid, 'DELETE, TRUNCATE, TRIGGER')
              else false end
   order by 1 limit 1;
  if rel is not null then
    return pg_catalog.format('has privileges on %s', rel);
  end if;
  return null;
end
$$;

-- Trusted issuers. SECURITY DEFINER for the same reason as the key functions.
create function auth.set_trusted_issuer(
  issuer text, jwks jsonb, audiences text[],
  role_claim text[] default '{role}', role_map jsonb default '{}',
  default_role text default 'authenticated')
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  checked jsonb;
  r text;
  why text;
begin
  if issuer is null or issuer = '' or pg_catalog.length(issuer) > 2048 then
    raise exception 'validation_failed: issuer must be the iss of the tokens, 1 to 2048 characters'
      using errcode = '22023';
  end if;
  -- Read through the library: in a session that has not loaded it yet, the setting is
  -- not defined and current_setting would answer NULL.
  if issuer = auth._jwt_issuer() then
    raise exception 'validation_failed: "%" is this database''s own issuer (auth.jwt_issuer)', issuer
      using errcode = '22023';
  end if;
  if jwks is null then
    raise exception 'validation_failed: jwks is required' using errcode = '22023';
  end if;
  checked := auth._check_jwks_text(jwks::text);
  if audiences is null or pg_catalog.cardinality(audiences) = 0
     or pg_catalog.array_position(audiences, null) is not null or '' = any (audiences) then
    raise exception 'validation_failed: at least one audience is required (the client or project id the tokens are issued for)'
      using errcode = '22023';
  end if;
  if role_claim is null or pg_catalog.cardinality(role_claim) = 0
     or pg_catalog.array_position(role_claim, null) is not null then
    raise exception 'validation_failed: role_claim must be a path of one or more claim names'
      using errcode = '22023';
  end if;
  if role_map is null or pg_catalog.jsonb_typeof(role_map) <> 'object'
     or exists (select from pg_catalog.jsonb_each(role_map) e where pg_catalog.jsonb_typeof(e.value) <> 'string') then
    raise exception 'validation_failed: role_map must map claim values to role names'
      using errcode = '22023';
  end if;
  -- A third party's token must never act as a role that bypasses row level security or
  -- can reach the auth tables (auth.authenticate checks again at every use).
  for r in select e.value from pg_catalog.jsonb_each_text(role_map) e
           union select default_role where default_role is not null loop
    why := auth._role_refusal(r);
    if why is not null then
      raise exception 'validation_failed: role "%" %; a third-party token cannot be given it', r, why
        using errcode = '22023';
    end if;
  end loop;
  insert into auth.trusted_issuers as t (issuer, jwks, audiences, role_claim, role_map, default_role)
  values (issuer, jwks, audiences, role_claim, role_map, default_role)
  on conflict on constraint trusted_issuers_pkey do update
     set jwks = excluded.jwks, audiences = excluded.audiences, role_claim = excluded.role_claim,
         role_map = excluded.role_map, default_role = excluded.default_role,
         updated_at = pg_catalog.now();
  perform auth._audit_admin('trusted_issuer_set',
    pg_catalog.jsonb_build_object('issuer', issuer, 'keys', checked -> 'keys'));
  return pg_catalog.jsonb_build_object(
    'issuer', issuer, 'keys', checked -> 'keys', 'skipped', checked -> 'skipped',
    'audiences', pg_catalog.to_jsonb(audiences), 'role_claim', pg_catalog.to_jsonb(role_claim),
    'role_map', role_map, 'default_role', default_role);
end
$$;
comment on function auth.set_trusted_issuer(text, jsonb, text[], text[], jsonb, text) is
  'Trust tokens whose iss is issuer, signed by a key of jwks, for one of audiences; map a claim to the role they act as.';

create function auth.drop_trusted_issuer(issuer text) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from auth.trusted_issuers t where t.issuer = drop_trusted_issuer.issuer;
  if not found then
    return false;
  end if;
  perform auth._audit_admin('trusted_issuer_dropped', pg_catalog.jsonb_build_object('issuer', issuer));
  return true;
end
$$;
comment on function auth.drop_trusted_issuer(text) is
  'Stop trusting an issuer; its tokens fail at once. Returns false when it was not registered.';

-- The public entry points that touch owner-only tables. SECURITY DEFINER so that anon
-- can sign up and in without any right on auth.*; search_path pinned so no object of the
-- caller's can stand in for ours. The Rust functions behind them qualify every name.
-- code_challenge and code_challenge_method make the confirmation link (with
-- auth.require_email_confirmation on) a PKCE flow; they are checked first.
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

comment on function auth.sign_in(text, text) is
  'Password sign-in; returns a session object like GoTrue''s /token?grant_type=password.';

-- auth.sign_jwt is the Rust function itself (src/tokens.rs: why it needs no definer
-- rights); EXECUTE, granted to service_role alone, decides who may sign.
comment on function auth.sign_jwt(jsonb) is
  'Sign arbitrary claims with the in-use key (API keys for anon/service_role). service_role and owner only.';

-- Sessions --------------------------------------------------------------------------

-- A duration setting of ours as an interval. SHOW spells them with units ('1h', '10min',
-- '30s'), which interval input reads as they are; 0 when the setting is not defined yet.
create function auth._seconds(name text) returns interval
language sql stable parallel safe
set search_path = pg_catalog, pg_temp
return coalesce(nullif(pg_catalog.current_setting(name, true), ''), '0')::pg_catalog.interval;

-- The jobs that must commit even though the call that asks for them fails; run by a
-- background worker (src/autonomous.rs) as the owner, never by a client.
create function auth._autonomous(job jsonb) returns void
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

comment on function auth.refresh(text) is
  'Exchange a refresh token for a new session object (rotation with reuse detection).';

-- Sign out the caller's session (from the request's claims): global = every session of
-- the user, local = this one, others = all but this one. Deleting a session deletes its
-- refresh tokens; with auth.session_check on, its access tokens stop working at once.
create function auth.sign_out(scope text default 'global') returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  sid uuid;
  uid uuid;
  n bigint;
begin
  perform auth._require_local_claims();
  sid := auth._claims_session_id();
  uid := auth.uid();
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
comment on function auth.sign_out(text) is
  'Sign out: scope global (default), local or others, for the session in request.jwt.claims.';

-- Delete ended sessions (with their tokens) and long-revoked refresh tokens, at most
-- batch_size of each per call; call it until both counts are 0 (e.g. from pg_cron).
create function auth.cleanup(batch_size integer default 1000) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  n_sessions bigint;
  n_tokens bigint;
  n_otps bigint;
  n_outbox bigint;
  n_flows bigint;
  n_challenges bigint;
  n_states bigint;
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
  -- Provider flows past their lifetime (10 minutes to come back, 5 more to finish).
  with batch as materialized (
    select o.id from auth.oauth_states o where o.created_at < pg_catalog.now() - interval '15 minutes'
     limit batch_size for update skip locked)
  delete from auth.oauth_states d using batch b where d.id = b.id;
  get diagnostics n_states = row_count;
  -- MFA challenges past their lifetime (verified or not: neither can be used again).
  with batch as materialized (
    select c.id from auth.mfa_challenges c
     where c.created_at < pg_catalog.now()
             - pg_catalog.make_interval(secs => (auth._mfa_settings() ->> 'challenge_expiry')::int)
     limit batch_size for update skip locked)
  delete from auth.mfa_challenges d using batch b where d.id = b.id;
  get diagnostics n_challenges = row_count;
  return jsonb_build_object('sessions', n_sessions, 'refresh_tokens', n_tokens,
                            'one_time_tokens', n_otps, 'email_outbox', n_outbox, 'flow_state', n_flows,
                            'mfa_challenges', n_challenges, 'oauth_states', n_states);
end
$$;
comment on function auth.cleanup(integer) is
  'Delete ended sessions, refresh tokens revoked longer than auth.revoked_token_retention, expired one-time tokens, outbox messages, PKCE flow states, MFA challenges and provider flows, in batches.';

-- GoTrue's GET /settings, from this database's settings: email sign-in is always on, phone
-- and SAML never are; of the external providers, those registered for sign-in with an ID
-- token (a trusted issuer that auth.sign_in_with_id_token knows by GoTrue's provider name:
-- google, apple) are on. Sign-up cannot be turned off. SECURITY DEFINER: the trusted
-- issuers are readable by service_role alone.
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

-- Whatever writes them (the API, a trigger, an administrator's UPDATE), the JSON columns
-- that later calls read back hold only what JSON clients can read: numbers a double can
-- hold, at most 64 levels deep (src/metadata.rs). A row that broke this would make every
-- later sign-in of its user fail. Triggers rather than CHECK constraints: they look at a
-- value only when it is written, so a row stored before these rules can still be signed
-- into (and repaired), where a constraint would refuse every later update of it.
create function auth._require_storable(value jsonb, what text, constraint_name text) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if not auth._storable_json(value::text) then
    raise exception 'validation_failed: % holds numbers beyond a double''s range or is nested more than 64 levels deep', what
      using errcode = 'check_violation', constraint = constraint_name;
  end if;
end
$$;

create function auth._users_metadata_storable() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op = 'INSERT' or new.raw_user_meta_data is distinct from old.raw_user_meta_data then
    perform auth._require_storable(new.raw_user_meta_data, 'raw_user_meta_data', 'users_raw_user_meta_data_storable');
  end if;
  if tg_op = 'INSERT' or new.raw_app_meta_data is distinct from old.raw_app_meta_data then
    perform auth._require_storable(new.raw_app_meta_data, 'raw_app_meta_data', 'users_raw_app_meta_data_storable');
  end if;
  return new;
end
$$;

create trigger users_metadata_storable
  before insert or update of raw_user_meta_data, raw_app_meta_data on auth.users
  for each row execute function auth._users_metadata_storable();

create function auth._identities_data_storable() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  if tg_op = 'INSERT' or new.identity_data is distinct from old.identity_data then
    perform auth._require_storable(new.identity_data, 'identity_data', 'identities_identity_data_storable');
  end if;
  return new;
end
$$;

create trigger identities_data_storable
  before insert or update of identity_data on auth.identities
  for each row execute function auth._identities_data_storable();

-- Privileges. Nothing in auth is reachable by default; then each function is granted to
-- the roles that need it. USAGE on the schema lets every role call auth.uid() & co in RLS.
revoke all on all tables in schema auth from public;
revoke all on all sequences in schema auth from public;
revoke all on all functions in schema auth from public;
grant usage on schema auth to public;

grant execute on function auth.uid(), auth.role(), auth.email(), auth.jwt() to public;
grant execute on function auth.sign_up(text, text, jsonb, text, text, text), auth.sign_in(text, text)
  to anon, authenticated, service_role;
-- Account flows: anyone may ask for a link or code and verify one; auth.user() and
-- auth.update_user() act on the caller's own user (anon gets no_authorization).
grant execute on function auth.recover(text, text, text, text),
  auth.sign_in_with_otp(text, boolean, jsonb, text, text, text),
  auth.resend(text, text, text, text, text), auth.verify_otp(text, text, text),
  auth."user"(), auth.update_user(jsonb, text), auth.reauthenticate()
  to anon, authenticated, service_role;
-- PKCE: opening a link and exchanging its code are steps of a sign-in; the settings are
-- what GoTrue shows every client.
grant execute on function auth.verify_link(text, text, text), auth.exchange_code_for_session(text, text),
  auth.settings()
  to anon, authenticated, service_role;
-- Anonymous and ID-token sign-in are sign-ins like the others.
grant execute on function auth.sign_in_anonymously(jsonb), auth.sign_in_with_id_token(text, text, text)
  to anon, authenticated, service_role;
-- The admin API: service_role (and the owner) only; anyone else gets 42501.
grant execute on function auth.admin_create_user(jsonb), auth.admin_get_user(uuid),
  auth.admin_list_users(integer, integer, text), auth.admin_update_user(uuid, jsonb),
  auth.admin_delete_user(uuid, boolean), auth.admin_generate_link(text, text, text, jsonb, text),
  auth.admin_invite_user(text, jsonb, text)
  to service_role;
-- MFA acts on the caller's own factors (anon gets no_authorization); the admin side is
-- service_role's.
grant execute on function auth.mfa_enroll(text, text, text), auth.mfa_challenge(uuid),
  auth.mfa_verify(uuid, uuid, text), auth.mfa_challenge_and_verify(uuid, text),
  auth.mfa_unenroll(uuid), auth.mfa_list_factors(), auth.mfa_get_authenticator_assurance_level()
  to anon, authenticated, service_role;
grant execute on function auth.mfa_enrolled() to public;
grant execute on function auth.mfa_generate_recovery_codes(), auth.mfa_verify_recovery_code(text)
  to anon, authenticated, service_role;
grant execute on function auth.admin_mfa_list_factors(uuid), auth.admin_mfa_delete_factor(uuid, uuid)
  to service_role;
-- Provider sign-in: anyone may start one; linking and unlinking act on the caller's own
-- user. The callback's two steps trust what the HTTP server read from the provider: the
-- server's role (granted auth_oauth) alone may call them.
grant execute on function auth.oauth_authorize(text, text, text, text) to anon, authenticated, service_role;
grant execute on function auth.link_identity(text, text, text, text), auth.unlink_identity(uuid)
  to anon, authenticated, service_role;
grant execute on function auth.oauth_callback(text, text, text), auth.oauth_sign_in(uuid, jsonb) to auth_oauth;
-- The mailer (connected as, or granted, service_role) reads the outbox and marks or
-- deletes what it has sent.
grant select, delete on auth.email_outbox to service_role;
grant update (sent_at) on auth.email_outbox to service_role;
-- Safe for every role: verify_jwt reveals only the claims of a token the caller holds, and
-- authenticate switches only to roles the connection could SET ROLE to anyway. The login
-- role of a thin API layer (PostgREST's authenticator) calls authenticate itself.
grant execute on function auth.verify_jwt(text), auth.authenticate(text) to public;
-- authenticate_request is authenticate behind the gateway's API-key check: no more.
grant execute on function auth.authenticate_request(text, text) to public;
grant execute on function auth.sign_jwt(jsonb) to service_role;
grant execute on function auth.refresh(text) to anon, authenticated, service_role;
grant execute on function auth.sign_out(text) to anon, authenticated, service_role;
grant execute on function auth.cleanup(integer) to service_role;
grant execute on function auth.password_hash_activity() to service_role;
-- Keys and trusted issuers: service_role manages them (the owner can anyway); the public
-- keys are for everyone.
grant execute on function auth.create_signing_key(text, text), auth.import_signing_key(text, text, text),
  auth.promote_signing_key(text), auth.revoke_signing_key(text), auth.list_signing_keys(),
  auth.set_trusted_issuer(text, jsonb, text[], text[], jsonb, text), auth.drop_trusted_issuer(text)
  to service_role;
grant select on auth.trusted_issuers to service_role;
grant execute on function auth.jwks() to public;
