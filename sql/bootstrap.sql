-- auth_ext schema: tables, types and roles, before any function is created.
-- The column sets follow Supabase Auth's, so triggers and policies written for Supabase
-- work unchanged. Differences are deliberate and commented.

do $$
begin
  -- CREATE EXTENSION adopts an existing `auth` schema (the control file names it); refuse
  -- one that already holds a users table instead of failing halfway with a bare
  -- "relation already exists".
  if pg_catalog.to_regclass('auth.users') is not null then
    raise exception 'auth_ext: auth.users already exists'
      using errcode = '42P07',
            hint = 'auth_ext creates its own auth schema; rename the existing one first (ALTER SCHEMA auth RENAME TO auth_old) and copy the rows over.';
  end if;
end
$$;

-- The roles PostgREST and Supabase expect. Roles are cluster-wide, so they are only
-- created when missing and are left in place by DROP EXTENSION.
do $$
begin
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
    create role anon nologin noinherit;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
    create role authenticated nologin noinherit;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'service_role') then
    -- As on Supabase: the service role bypasses row level security.
    create role service_role nologin noinherit bypassrls;
  end if;
  if not exists (select 1 from pg_catalog.pg_roles where rolname = 'supabase_auth_admin') then
    -- Hooks run as this role (Supabase's name for it, so its hook grants work unchanged);
    -- here it owns nothing and may read none of the auth tables.
    create role supabase_auth_admin nologin noinherit;
  end if;
end
$$;

create type auth.aal_level as enum ('aal1', 'aal2', 'aal3');

create table auth.users (
  instance_id uuid,
  id uuid not null primary key,
  aud varchar(255),
  role varchar(255),
  email varchar(255),
  encrypted_password varchar(255),
  email_confirmed_at timestamptz,
  invited_at timestamptz,
  confirmation_token varchar(255),
  confirmation_sent_at timestamptz,
  recovery_token varchar(255),
  recovery_sent_at timestamptz,
  email_change_token_new varchar(255),
  email_change varchar(255),
  email_change_sent_at timestamptz,
  last_sign_in_at timestamptz,
  raw_app_meta_data jsonb,
  raw_user_meta_data jsonb,
  is_super_admin boolean,
  created_at timestamptz,
  updated_at timestamptz,
  phone text default null,
  phone_confirmed_at timestamptz,
  phone_change text default '',
  phone_change_token varchar(255) default '',
  phone_change_sent_at timestamptz,
  confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
  email_change_token_current varchar(255) default '',
  email_change_confirm_status smallint default 0
    check (email_change_confirm_status >= 0 and email_change_confirm_status <= 2),
  banned_until timestamptz,
  reauthentication_token varchar(255) default '',
  reauthentication_sent_at timestamptz,
  is_sso_user boolean not null default false,
  deleted_at timestamptz,
  is_anonymous boolean not null default false
);
comment on table auth.users is 'Auth: stores user login data within a secure schema.';
comment on column auth.users.is_sso_user is 'Auth: Set this column to true when the account comes from SSO. These accounts can have duplicate emails.';
-- Supabase has unique(email) where not SSO; auth_ext makes it case-insensitive, so that
-- A@x.io and a@x.io are one account however a row was written.
create unique index users_email_partial_key on auth.users (lower(email)) where is_sso_user = false;
create unique index users_phone_key on auth.users (phone);
create index users_instance_id_idx on auth.users (instance_id);
create index users_is_anonymous_idx on auth.users (is_anonymous);

create table auth.identities (
  provider_id text not null,
  user_id uuid not null references auth.users (id) on delete cascade,
  identity_data jsonb not null,
  provider text not null,
  last_sign_in_at timestamptz,
  created_at timestamptz,
  updated_at timestamptz,
  email text generated always as (lower(identity_data ->> 'email')) stored,
  id uuid not null default gen_random_uuid() primary key,
  constraint identities_provider_id_provider_unique unique (provider_id, provider)
);
comment on table auth.identities is 'Auth: Stores identities associated to a user.';
create index identities_user_id_idx on auth.identities (user_id);
create index identities_email_idx on auth.identities (email text_pattern_ops);

create table auth.sessions (
  id uuid not null primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  created_at timestamptz,
  updated_at timestamptz,
  factor_id uuid,
  aal auth.aal_level,
  not_after timestamptz,
  refreshed_at timestamp,
  user_agent text,
  ip inet,
  tag text
);
comment on table auth.sessions is 'Auth: Stores session data associated to a user.';
create index sessions_user_id_idx on auth.sessions (user_id);
create index user_id_created_at_idx on auth.sessions (user_id, created_at);
create index sessions_not_after_idx on auth.sessions (not_after desc);

-- How each session was authenticated: the amr claim of its access tokens, refresh after
-- refresh (as on Supabase).
create table auth.mfa_amr_claims (
  session_id uuid not null references auth.sessions (id) on delete cascade,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  authentication_method text not null,
  id uuid not null primary key,
  constraint mfa_amr_claims_session_id_authentication_method_pkey unique (session_id, authentication_method)
);
comment on table auth.mfa_amr_claims is 'auth: stores authenticator method reference claims for multi factor authentication';

-- Multi-factor authentication (Supabase's tables). A TOTP factor's `secret` is stored
-- encrypted (XChaCha20-Poly1305 under a key of auth.secret_keys, the factor's id bound in),
-- so a copy of this table generates no code. `last_verified_step` (our addition) is the
-- last 30-second step whose code was accepted: a code is accepted once.
create type auth.factor_type as enum ('totp', 'webauthn', 'phone');
create type auth.factor_status as enum ('unverified', 'verified');
create table auth.mfa_factors (
  id uuid not null primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  friendly_name text,
  factor_type auth.factor_type not null,
  status auth.factor_status not null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  secret text,
  phone text,
  last_challenged_at timestamptz unique,
  web_authn_credential jsonb,
  web_authn_aaguid uuid,
  last_webauthn_challenge_data jsonb,
  last_verified_step bigint
);
comment on table auth.mfa_factors is 'auth: stores metadata about factors';
create unique index mfa_factors_user_friendly_name_unique on auth.mfa_factors (friendly_name, user_id)
  where trim(friendly_name) <> '';
create unique index unique_phone_factor_per_user on auth.mfa_factors (user_id, phone);
create index factor_id_created_at_idx on auth.mfa_factors (user_id, created_at);
create index mfa_factors_user_id_idx on auth.mfa_factors (user_id);

create table auth.mfa_challenges (
  id uuid not null primary key,
  factor_id uuid not null references auth.mfa_factors (id) on delete cascade,
  created_at timestamptz not null,
  verified_at timestamptz,
  ip_address inet not null,
  otp_code text,
  web_authn_session_data jsonb
);
comment on table auth.mfa_challenges is 'auth: stores metadata about challenge requests made';
create index mfa_challenge_created_at_idx on auth.mfa_challenges (created_at desc);

-- Recovery codes (beyond Supabase): single-use codes that stand in for a TOTP code when the
-- device is lost. Shown once; stored as keyed hashes (auth._otp_hash of "<user id>:<code>"),
-- so a copy of this table gives no code.
create table auth.mfa_recovery_codes (
  id uuid not null primary key,
  user_id uuid not null references auth.users (id) on delete cascade,
  code_hash text not null,
  created_at timestamptz not null,
  used_at timestamptz
);
comment on table auth.mfa_recovery_codes is 'auth_ext: MFA recovery codes, as keyed hashes. Owner only.';
create index mfa_recovery_codes_user_id_idx on auth.mfa_recovery_codes (user_id);

create table auth.refresh_tokens (
  instance_id uuid,
  id bigserial primary key,
  -- Deliberate difference from Supabase: `token` holds the SHA-256 (hex) of the refresh
  -- token, never the token itself, so a leaked copy of this table refreshes nothing.
  token varchar(255),
  user_id varchar(255),
  revoked boolean,
  created_at timestamptz,
  updated_at timestamptz,
  parent varchar(255),
  session_id uuid references auth.sessions (id) on delete cascade,
  constraint refresh_tokens_token_unique unique (token)
);
comment on table auth.refresh_tokens is 'Auth: Store of tokens used to refresh JWT tokens once they expire.';
create index refresh_tokens_instance_id_idx on auth.refresh_tokens (instance_id);
create index refresh_tokens_instance_id_user_id_idx on auth.refresh_tokens (instance_id, user_id);
create index refresh_tokens_parent_idx on auth.refresh_tokens (parent);
create index refresh_tokens_session_id_revoked_idx on auth.refresh_tokens (session_id, revoked);
create index refresh_tokens_updated_at_idx on auth.refresh_tokens (updated_at desc);

create table auth.audit_log_entries (
  instance_id uuid,
  id uuid not null primary key,
  payload json,
  created_at timestamptz,
  ip_address varchar(64) not null default ''
);
comment on table auth.audit_log_entries is 'Auth: Audit trail for user actions.';
create index audit_logs_instance_id_idx on auth.audit_log_entries (instance_id);

-- Failed sign-ins and code checks per account ('email:<address>') and per client address
-- ('ip:<address>'), one row each, counted over a sliding window for the brute-force
-- lockout. Written by autonomous transactions (a failed sign-in raises, which would roll
-- back an ordinary write); only ever inserted or deleted, so writing a failure never
-- waits for a row lock that another transaction holds.
create table auth.sign_in_failures (
  key text not null,
  failed_at timestamptz not null default now()
);
comment on table auth.sign_in_failures is 'auth_ext: failed sign-ins and code checks for the lockout, one row each. Owner only.';
create index sign_in_failures_key_failed_at_idx on auth.sign_in_failures (key, failed_at);

-- Key material. Readable by the extension owner alone; functions that need a key read it
-- with the owner's rights from Rust (see src/keys.rs).
create table auth.signing_keys (
  id uuid not null default gen_random_uuid() primary key,
  kid text not null default (gen_random_uuid())::text,
  algorithm text not null,
  state text not null default 'standby'
    check (state in ('standby', 'in_use', 'previously_used', 'revoked')),
  -- HS256: the shared secret string; its UTF-8 bytes are the HMAC key, exactly as
  -- PostgREST's jwt-secret uses it. ES256, RS256, EdDSA: the private key as PKCS#8 PEM.
  -- Wiped (NULL) when the key is revoked.
  secret text,
  -- true for the key CREATE EXTENSION generated; see auth._signing_keys_before_insert.
  generated boolean not null default false,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  -- The public half as a JWK (NULL for HS256, which has none); what auth.jwks() publishes.
  public_jwk jsonb,
  constraint signing_keys_kid_key unique (kid),
  constraint signing_keys_kid_check check (kid <> '' and length(kid) <= 200),
  constraint signing_keys_algorithm_check check (algorithm in ('HS256', 'ES256', 'RS256', 'EdDSA')),
  constraint signing_keys_secret_check check ((secret is null) = (state = 'revoked'))
);
comment on table auth.signing_keys is 'auth_ext: token signing keys. Owner only: never grant access to this table.';
-- One key signs: the in_use one, whatever its algorithm.
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

-- One-time tokens of the account flows (sign-up confirmation, recovery, magic link, email
-- change, invitation), one per user and purpose: a new one replaces the old. Only keyed
-- hashes are kept (auth._otp_hash: an HMAC under a key of auth.secret_keys): token_hash
-- of the link token (256 random bits), code_hash of "<id>:<six-digit code>", so a copy of
-- this table alone verifies nothing. relates_to is the address the message went to.
-- (Supabase's table of the same name keeps one unkeyed hash, of the email and the code.)
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
    'confirmation_token', 'recovery_token', 'magiclink_token', 'email_change_token_new', 'invite_token',
    'reauthentication_token')),
  constraint one_time_tokens_token_hash_check check (length(token_hash) = 64 and length(code_hash) = 64),
  constraint one_time_tokens_user_id_token_type_key unique (user_id, token_type)
);
comment on table auth.one_time_tokens is 'auth_ext: hashes of pending confirmation, recovery, magic-link, email-change and invite tokens. Owner only.';
create index one_time_tokens_token_hash_idx on auth.one_time_tokens using hash (token_hash);
create index one_time_tokens_relates_to_idx on auth.one_time_tokens using hash (relates_to);

-- Keys of the short secrets the extension stores (one-time codes and link tokens now):
-- those are kept as HMACs under a key from this table, so a copy of the table that holds
-- them (a leaked dump of it, a replica of it) cannot be used to test guesses. Owner only;
-- read by the library with the owner's rights, like the signing keys.
create table auth.secret_keys (
  purpose text not null primary key,
  secret text not null,
  created_at timestamptz not null default now(),
  constraint secret_keys_purpose_check check (purpose in ('otp', 'mfa')),
  constraint secret_keys_secret_check check (length(secret) >= 43)
);
comment on table auth.secret_keys is 'auth_ext: HMAC keys of stored one-time codes and tokens. Owner only: never grant access to this table.';

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

-- Counters for rate limits other than the sign-in lockout (messages per address),
-- in fixed windows.
create table auth.rate_limits (
  key text not null primary key,
  window_start timestamptz not null,
  hits integer not null
);
comment on table auth.rate_limits is 'auth_ext: rate-limit counters (messages per address). Owner only.';

-- pg_dump keeps rows of extension tables only when they are registered: without this a
-- dump and restore would lose every account.
select pg_catalog.pg_extension_config_dump('auth.users', '');
select pg_catalog.pg_extension_config_dump('auth.identities', '');
select pg_catalog.pg_extension_config_dump('auth.sessions', '');
select pg_catalog.pg_extension_config_dump('auth.mfa_amr_claims', '');
select pg_catalog.pg_extension_config_dump('auth.mfa_factors', '');
select pg_catalog.pg_extension_config_dump('auth.mfa_challenges', '');
select pg_catalog.pg_extension_config_dump('auth.mfa_recovery_codes', '');
select pg_catalog.pg_extension_config_dump('auth.refresh_tokens', '');
select pg_catalog.pg_extension_config_dump('auth.refresh_tokens_id_seq', '');
select pg_catalog.pg_extension_config_dump('auth.audit_log_entries', '');
select pg_catalog.pg_extension_config_dump('auth.signing_keys', '');
select pg_catalog.pg_extension_config_dump('auth.trusted_issuers', '');
select pg_catalog.pg_extension_config_dump('auth.one_time_tokens', '');
select pg_catalog.pg_extension_config_dump('auth.secret_keys', '');
select pg_catalog.pg_extension_config_dump('auth.email_outbox', '');
select pg_catalog.pg_extension_config_dump('auth.email_outbox_id_seq', '');
select pg_catalog.pg_extension_config_dump('auth.flow_state', '');
