-- auth_ext 0.2.0 -> 0.3.0: asymmetric signing keys (ES256, RS256, EdDSA), rotation, JWKS,
-- and trusted third-party issuers.
\echo Use "ALTER EXTENSION auth_ext UPDATE TO '0.3.0'" to load this file. \quit

-- Rust functions new in this version.
CREATE FUNCTION auth."_check_jwks"("jwks" jsonb) RETURNS jsonb
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c AS 'MODULE_PATHNAME', '_check_jwks_wrapper';

CREATE FUNCTION auth."_new_key_material"("algorithm" TEXT, "private_key" TEXT, "kid" TEXT) RETURNS jsonb
VOLATILE
LANGUAGE c AS 'MODULE_PATHNAME', '_new_key_material_wrapper';

CREATE FUNCTION auth."jwks"() RETURNS jsonb
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c AS 'MODULE_PATHNAME', 'jwks_wrapper';

-- Every key gets a kid (tokens name it in their header); a token without one still
-- verifies against every key of its algorithm. One in_use key in all, not one per
-- algorithm; private keys of any algorithm; revoked keys keep no secret.
update auth.signing_keys set kid = id::text where kid is null;
drop index auth.signing_keys_one_in_use;
alter table auth.signing_keys
  alter column kid set default (gen_random_uuid())::text,
  alter column kid set not null,
  alter column secret drop not null,
  add column public_jwk jsonb,
  drop constraint signing_keys_algorithm_check,
  add constraint signing_keys_kid_check check (kid <> '' and length(kid) <= 200),
  add constraint signing_keys_algorithm_check check (algorithm in ('HS256', 'ES256', 'RS256', 'EdDSA')),
  add constraint signing_keys_secret_check check ((secret is null) = (state = 'revoked'));
create unique index signing_keys_one_in_use on auth.signing_keys ((true)) where state = 'in_use';

-- Third-party issuers whose tokens auth.verify_jwt and auth.authenticate accept (Supabase's
-- "third-party auth"): their public keys are stored here, never fetched.
create table auth.trusted_issuers (
  issuer text not null primary key,
  jwks jsonb not null,
  audiences text[] not null,
  role_claim text[] not null default '{role}',
  role_map jsonb not null default '{}',
  default_role text default 'authenticated',
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint trusted_issuers_issuer_check check (issuer <> '' and length(issuer) <= 2048),
  constraint trusted_issuers_audiences_check
    check (cardinality(audiences) > 0 and array_position(audiences, null) is null),
  constraint trusted_issuers_role_claim_check
    check (cardinality(role_claim) > 0 and array_position(role_claim, null) is null),
  constraint trusted_issuers_role_map_check check (jsonb_typeof(role_map) = 'object')
);
comment on table auth.trusted_issuers is 'auth_ext: third-party token issuers, their JWKS, audiences and role mapping. Change through auth.set_trusted_issuer.';
select pg_catalog.pg_extension_config_dump('auth.trusted_issuers', '');
revoke all on auth.trusted_issuers from public;

create or replace function auth._signing_keys_before_insert() returns trigger
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

create trigger trusted_issuers_changed
  after insert or update or delete or truncate on auth.trusted_issuers
  for each statement execute function auth._signing_keys_changed();

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
                   traits || pg_catalog.jsonb_build_object('session_user', pg_catalog.session_user()));

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
  info record;
begin
  if issuer is null or issuer = '' or pg_catalog.length(issuer) > 2048 then
    raise exception 'validation_failed: issuer must be the iss of the tokens, 1 to 2048 characters'
      using errcode = '22023';
  end if;
  if issuer = pg_catalog.current_setting('auth.jwt_issuer', true) then
    raise exception 'validation_failed: "%" is this database''s own issuer (auth.jwt_issuer)', issuer
      using errcode = '22023';
  end if;
  if jwks is null then
    raise exception 'validation_failed: jwks is required' using errcode = '22023';
  end if;
  checked := auth._check_jwks(jwks);
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
  -- A third party's token must never act as a role that bypasses row level security.
  for r in select e.value from pg_catalog.jsonb_each_text(role_map) e
           union select default_role where default_role is not null loop
    select a.rolsuper, a.rolbypassrls,
           a.oid = (select c.relowner from pg_catalog.pg_class c
                     where c.oid = 'auth.signing_keys'::pg_catalog.regclass) as owner
      into info
      from pg_catalog.pg_roles a where a.rolname = r;
    if not found then
      raise exception 'validation_failed: role "%" does not exist', r using errcode = '22023';
    end if;
    if info.rolsuper or info.rolbypassrls or info.owner then
      raise exception 'validation_failed: role "%" bypasses row level security; a third-party token cannot be given it', r
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

revoke all on function auth._check_jwks(jsonb), auth._new_key_material(text, text, text),
  auth._signing_key_json(auth.signing_keys), auth._audit_admin(text, jsonb),
  auth._add_signing_key(text, text, text), auth._lock_signing_key(text) from public;
revoke all on function auth.create_signing_key(text, text), auth.import_signing_key(text, text, text),
  auth.promote_signing_key(text), auth.revoke_signing_key(text), auth.list_signing_keys(),
  auth.set_trusted_issuer(text, jsonb, text[], text[], jsonb, text), auth.drop_trusted_issuer(text),
  auth.jwks() from public;
-- Keys and trusted issuers: service_role manages them (the owner can anyway); the public
-- keys are for everyone.
grant execute on function auth.create_signing_key(text, text), auth.import_signing_key(text, text, text),
  auth.promote_signing_key(text), auth.revoke_signing_key(text), auth.list_signing_keys(),
  auth.set_trusted_issuer(text, jsonb, text[], text[], jsonb, text), auth.drop_trusted_issuer(text)
  to service_role;
grant select on auth.trusted_issuers to service_role;
grant execute on function auth.jwks() to public;
