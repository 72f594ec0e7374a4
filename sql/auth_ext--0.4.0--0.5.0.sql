-- auth_ext 0.4.0 -> 0.5.0: security round 2. Every statement of the library runs with a
-- pinned search_path; third-party tokens act on no local account; the lockout is counted
-- before each check; one-time codes are stored as keyed hashes; stored metadata is
-- validated on every path and by CHECK constraints; hooks run as supabase_auth_admin;
-- calls that must not reveal an account take the same time either way.
\echo Use "ALTER EXTENSION auth_ext UPDATE TO '0.5.0'" to load this file. \quit

-- The role hooks run as (cluster-wide: created when missing, left by DROP EXTENSION).
do $$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'supabase_auth_admin') then
    create role supabase_auth_admin nologin noinherit;
  end if;
end
$$;

-- Rust functions new in this version.
CREATE FUNCTION auth."password_hash_activity"() RETURNS jsonb /* pgrx :: JsonB */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'password_hash_activity_wrapper';

CREATE FUNCTION auth."_attempt_begin"(
	"email" TEXT /* Option < & str > */
) RETURNS void
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_attempt_begin_wrapper';

CREATE FUNCTION auth."_attempt_failed"(
	"email" TEXT, /* Option < & str > */
	"user_id" uuid, /* Option < pgrx :: Uuid > */
	"otp_type" TEXT /* & str */
) RETURNS void
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_attempt_failed_wrapper';

CREATE FUNCTION auth."_attempt_succeeded"() RETURNS void
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_attempt_succeeded_wrapper';

CREATE FUNCTION auth."_calling_role"() RETURNS TEXT /* String */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_calling_role_wrapper';

CREATE FUNCTION auth."_check_json"(
	"data" TEXT, /* Option < & str > */
	"what" TEXT, /* & str */
	"max_bytes" INT /* i32 */
) RETURNS void
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_json_wrapper';

CREATE FUNCTION auth."_check_jwks_text"(
	"jwks" TEXT /* & str */
) RETURNS jsonb /* pgrx :: JsonB */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_check_jwks_text_wrapper';

CREATE FUNCTION auth."_jwt_issuer"() RETURNS TEXT /* Option < String > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_jwt_issuer_wrapper';

CREATE FUNCTION auth."_keyed_hash"(
	"digest" TEXT /* & str */
) RETURNS TEXT /* String */
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_keyed_hash_wrapper';

CREATE FUNCTION auth."_run_hook"(
	"hook" oid, /* pg_sys :: Oid */
	"event" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_run_hook_wrapper';

CREATE FUNCTION auth."_new_password_hash"(
	"user_id" uuid, /* pgrx :: Uuid */
	"password" TEXT /* Option < & str > */
) RETURNS TEXT /* String */
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_new_password_hash_wrapper';

CREATE FUNCTION auth."_storable_json"(
	"data" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_storable_json_wrapper';

CREATE FUNCTION auth."_third_party_issuer"() RETURNS TEXT /* Option < String > */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_third_party_issuer_wrapper';

-- The keys of stored short secrets, apart from the table that stores them.
create table auth.secret_keys (
  purpose text not null primary key,
  secret text not null,
  created_at timestamptz not null default now(),
  constraint secret_keys_purpose_check check (purpose in ('otp')),
  constraint secret_keys_secret_check check (length(secret) >= 43)
);
comment on table auth.secret_keys is 'auth_ext: HMAC keys of stored one-time codes and tokens. Owner only: never grant access to this table.';
select pg_catalog.pg_extension_config_dump('auth.secret_keys', '');
revoke all on auth.secret_keys from public;

-- The failure counters become one row per failure, counted over a sliding window: a
-- failure is only ever inserted, so writing one never waits for a row lock another
-- transaction holds (an attacker could hold one to keep the writers busy).
alter table auth.sign_in_failures drop constraint sign_in_failures_pkey;
alter table auth.sign_in_failures rename column window_start to failed_at;
insert into auth.sign_in_failures (key, failed_at, failures)
select f.key, f.failed_at, 1 from auth.sign_in_failures f, pg_catalog.generate_series(2, f.failures) n;
alter table auth.sign_in_failures drop column failures;
alter table auth.sign_in_failures alter column failed_at set default now();
create index sign_in_failures_key_failed_at_idx on auth.sign_in_failures (key, failed_at);
comment on table auth.sign_in_failures is 'auth_ext: failed sign-ins and code checks for the lockout, one row each. Owner only.';

-- SQL functions new in this version.
create function auth._sha256_hex(value text) returns text
language sql immutable parallel safe
return pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(value, 'UTF8')), 'hex');

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

create function auth._secret_keys_before_insert() returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from auth.secret_keys k where k.purpose = new.purpose;
  return new;
end
$$;

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

-- SQL functions changed in this version (as in sql/flows.sql, sql/admin.sql, sql/finalize.sql).
create or replace function auth._otp_hash(token text) returns text
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
  return auth._keyed_hash(auth._sha256_hex(token));
end
$$;

create or replace function auth._check_data(data jsonb, what text) returns void
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
  if data is not null then
    perform auth._check_json(data::text, what, 16384);
  end if;
end
$$;

create or replace function auth._call_hook(hook text, event jsonb, timeout_ms integer) returns jsonb
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

create or replace function auth._audit_admin(action text, traits jsonb) returns void
language sql volatile
set search_path = pg_catalog, pg_temp
return auth._audit(action, '00000000-0000-0000-0000-000000000000'::uuid,
                   traits || pg_catalog.jsonb_build_object('session_user', pg_catalog.session_user(),
                                                           'actor_role', auth._calling_role()));

create or replace function auth._audit_user_admin(action text, u auth.users, traits jsonb) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  perform auth._audit_admin(action, traits || pg_catalog.jsonb_build_object(
    'user_id', u.id, 'user_email', u.email));
end
$$;

create or replace function auth._current_user(lock boolean) returns auth.users
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
      s := auth._flow_settings(redirect_to);
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

create or replace function auth.recover(email text, redirect_to text default null) returns jsonb
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
  -- The same answer, in the same time, for an unknown address.
  perform auth._send_or_decoy(uid, 'recovery', addr, s, 'user_recovery_requested', '{"provider": "email"}');
  return '{}'::jsonb;
end
$$;

create or replace function auth.sign_in_with_otp(email text, create_user boolean default true,
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
comment on function auth.sign_in_with_otp(text, boolean, jsonb, text) is
  'Passwordless sign-in: send a magic link and a six-digit code (creating the user unless create_user is false).';

create or replace function auth.resend(type text, email text, redirect_to text default null) returns jsonb
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
comment on function auth.resend(text, text, text) is
  'Send a pending sign-up confirmation or email-change confirmation again.';

create or replace function auth.verify_otp(email text, token text, type text) returns jsonb
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
  session := auth._start_session(u.id, method);
  perform auth._audit(case o.token_type
      when 'confirmation_token' then 'user_signedup' when 'invite_token' then 'invite_accepted'
      when 'email_change_token_new' then 'user_modified' else 'login' end,
    u.id, pg_catalog.jsonb_build_object('provider', 'email', 'method', method));
  return session;
end
$$;

create or replace function auth._repeated_sign_up(address text, hash text, metadata jsonb, redirect_to text)
returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  s jsonb := auth._flow_settings(redirect_to);
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

create or replace function auth.sign_out(scope text default 'global') returns void
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

create or replace function auth.set_trusted_issuer(
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

create or replace function auth.sign_in_with_id_token(provider text, id_token text, nonce text default null)
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
  return jsonb_build_object('sessions', n_sessions, 'refresh_tokens', n_tokens,
                            'one_time_tokens', n_otps, 'email_outbox', n_outbox);
end
$$;
comment on function auth.cleanup(integer) is
  'Delete ended sessions, refresh tokens revoked longer than auth.revoked_token_retention, expired one-time tokens and outbox messages, in batches.';

create or replace function auth.admin_create_user(attributes jsonb) returns jsonb
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

create or replace function auth.admin_update_user(id uuid, attributes jsonb) returns jsonb
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

create trigger secret_keys_before_insert
  before insert on auth.secret_keys
  for each row execute function auth._secret_keys_before_insert();
create trigger secret_keys_changed
  after insert or update or delete or truncate on auth.secret_keys
  for each statement execute function auth._signing_keys_changed();
insert into auth.secret_keys (purpose, secret) values ('otp', auth._random_secret());

-- Pending one-time tokens were stored as plain SHA-256: each becomes the HMAC of that
-- digest (what auth._otp_hash stores now), so links and codes already sent keep working
-- and a copy of the table no longer gives a six-digit code away.
update auth.one_time_tokens
   set token_hash = auth._keyed_hash(token_hash), code_hash = auth._keyed_hash(code_hash);

-- Stored JSON must stay readable by later calls: new writes are checked by triggers. Rows
-- written before this version are left as they are (their users can still sign in to
-- see a clear error, and be repaired); a warning says how many there are.
create trigger users_metadata_storable
  before insert or update of raw_user_meta_data, raw_app_meta_data on auth.users
  for each row execute function auth._users_metadata_storable();
create trigger identities_data_storable
  before insert or update of identity_data on auth.identities
  for each row execute function auth._identities_data_storable();
do $$
declare
  n bigint;
begin
  select pg_catalog.count(*) into n from auth.users u
   where not auth._storable_json(u.raw_user_meta_data::text) or not auth._storable_json(u.raw_app_meta_data::text)
      or exists (select from auth.identities i where i.user_id = u.id and not auth._storable_json(i.identity_data::text));
  if n > 0 then
    raise warning 'auth_ext: % users hold metadata or identity data that later calls cannot use (numbers beyond a double''s range or nesting deeper than 64 levels)', n
      using hint = 'Their sign-ins fail with unexpected_failure (22000) until an administrator repairs the data (auth.admin_update_user).';
  end if;
end
$$;

-- Gone from the extension: the forms of 0.4.0 its new SQL no longer calls (the library
-- keeps their symbols for databases not yet updated) and the benchmark's functions (a
-- function that signs in without a password must not exist in a user's database).
drop function auth._check_jwks(jsonb);
drop function auth._locked_out(text);
drop function auth._otp_failed(text, uuid, text);
drop function auth._sign_in_without_password_check(text);
drop function auth._verify_password(text, text);

-- New internal functions: no EXECUTE for anyone but the owner.
revoke all on function auth._attempt_begin(text), auth._attempt_failed(text, uuid, text),
  auth._attempt_succeeded(), auth._calling_role(), auth._check_json(text, text, integer),
  auth._check_jwks_text(text), auth._jwt_issuer(), auth._keyed_hash(text), auth._run_hook(oid, text),
  auth._new_password_hash(uuid, text), auth._storable_json(text), auth._third_party_issuer(),
  auth._sha256_hex(text), auth._role_refusal(text), auth._require_local_claims(),
  auth._secret_keys_before_insert(), auth._send_or_decoy(uuid, text, text, jsonb, text, jsonb),
  auth._creation_decoy(), auth._users_metadata_storable(), auth._identities_data_storable(),
  auth._decoy_user(), auth._require_storable(jsonb, text, text), auth.password_hash_activity()
  from public;
grant execute on function auth.password_hash_activity() to service_role;
