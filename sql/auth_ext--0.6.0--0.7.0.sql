-- auth_ext 0.6.0 -> 0.7.0: multi-factor authentication: TOTP factors (auth.mfa_factors,
-- auth.mfa_challenges; secrets encrypted under a new 'mfa' key of auth.secret_keys), aal2
-- sessions, recovery codes (auth.mfa_recovery_codes), the factors in the user object,
-- GoTrue's aal2 rule for changing the email or password, and the password-change proofs
-- (auth.reauthenticate's nonce, the current password).
\echo Use "ALTER EXTENSION auth_ext UPDATE TO '0.7.0'" to load this file. \quit

-- Rust functions new in this version.
CREATE FUNCTION auth."_current_password_matches"(
	"user_id" uuid, /* pgrx :: Uuid */
	"password" TEXT /* Option < & str > */
) RETURNS bool /* bool */
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_current_password_matches_wrapper';

CREATE FUNCTION auth."_mfa_attempt_begin"(
	"factor_id" uuid /* pgrx :: Uuid */
) RETURNS void
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_mfa_attempt_begin_wrapper';

CREATE FUNCTION auth."_mfa_failed"(
	"factor_id" uuid, /* pgrx :: Uuid */
	"user_id" uuid /* pgrx :: Uuid */
) RETURNS void
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_mfa_failed_wrapper';

CREATE FUNCTION auth."_mfa_new_totp"(
	"factor_id" uuid, /* pgrx :: Uuid */
	"issuer" TEXT, /* & str */
	"account" TEXT /* & str */
) RETURNS jsonb /* pgrx :: JsonB */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_mfa_new_totp_wrapper';

CREATE FUNCTION auth."_mfa_recovery_code"() RETURNS TEXT /* String */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_mfa_recovery_code_wrapper';

CREATE FUNCTION auth."_mfa_recovery_failed"(
	"user_id" uuid /* pgrx :: Uuid */
) RETURNS void
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_mfa_recovery_failed_wrapper';

CREATE FUNCTION auth."_mfa_session"(
	"user_id" uuid, /* pgrx :: Uuid */
	"session_id" uuid /* pgrx :: Uuid */
) RETURNS jsonb /* pgrx :: JsonB */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_mfa_session_wrapper';

CREATE FUNCTION auth."_mfa_settings"() RETURNS jsonb /* pgrx :: JsonB */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_mfa_settings_wrapper';

CREATE FUNCTION auth."_mfa_totp_step"(
	"factor_id" uuid, /* pgrx :: Uuid */
	"sealed" TEXT, /* & str */
	"code" TEXT, /* Option < & str > */
	"last_step" bigint /* Option < i64 > */
) RETURNS bigint /* Option < i64 > */
VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_mfa_totp_step_wrapper';

CREATE FUNCTION auth."_password_update_rules"() RETURNS jsonb /* pgrx :: JsonB */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_password_update_rules_wrapper';

CREATE FUNCTION auth."_request_ip"() RETURNS TEXT /* Option < String > */
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_request_ip_wrapper';

CREATE FUNCTION auth."_site_url"() RETURNS TEXT /* Option < String > */
STRICT STABLE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_site_url_wrapper';

-- The factor tables (as in sql/bootstrap.sql).
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


select pg_catalog.pg_extension_config_dump('auth.mfa_factors', '');
select pg_catalog.pg_extension_config_dump('auth.mfa_challenges', '');
select pg_catalog.pg_extension_config_dump('auth.mfa_recovery_codes', '');
revoke all on auth.mfa_factors, auth.mfa_challenges, auth.mfa_recovery_codes from public;

-- The key of stored TOTP secrets.
alter table auth.secret_keys drop constraint secret_keys_purpose_check;
alter table auth.secret_keys add constraint secret_keys_purpose_check check (purpose in ('otp', 'mfa'));
insert into auth.secret_keys (purpose, secret) values ('mfa', auth._random_secret());

-- The reauthentication nonce is a one-time token.
alter table auth.one_time_tokens drop constraint one_time_tokens_token_type_check;

alter table auth.one_time_tokens add constraint one_time_tokens_token_type_check check (token_type in (
    'confirmation_token', 'recovery_token', 'magiclink_token', 'email_change_token_new', 'invite_token',
    'reauthentication_token'));

-- Factors in the user object.
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
    'banned_until', auth._iso(u.banned_until)))
  -- The user's MFA factors, as GoTrue lists them (omitted when there are none).
  || coalesce((select pg_catalog.jsonb_build_object('factors',
                 pg_catalog.jsonb_agg(auth._factor_json(f) order by f.created_at))
                 from auth.mfa_factors f where f.user_id = u.id having pg_catalog.count(*) > 0), '{}'::jsonb);
end;


-- Multi-factor authentication with Supabase's semantics: TOTP factors, challenges, aal2
-- sessions. The cryptography is in src/mfa.rs; the rules are here. Every function acts
-- for the signed-in user of request.jwt.claims (auth._current_user), with definer rights
-- (the factor tables are the owner's alone) and a pinned search_path.

-- The caller's session (its aal) and whether the user has a verified factor.
create function auth._mfa_caller(out u auth.users, out session_id uuid, out aal text,
                                 out has_verified boolean)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  u := auth._current_user(true);
  session_id := auth._claims_session_id();
  select coalesce(s.aal::text, 'aal1') into aal from auth.sessions s where s.id = session_id;
  aal := coalesce(aal, 'aal1');
  has_verified := exists (select from auth.mfa_factors f where f.user_id = u.id and f.status = 'verified');
end
$$;

create function auth._mfa_factor(user_id uuid, factor_id uuid) returns auth.mfa_factors
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
  f auth.mfa_factors;
begin
  select * into f from auth.mfa_factors x
   where x.id = _mfa_factor.factor_id and x.user_id = _mfa_factor.user_id for update;
  if not found then
    raise exception 'mfa_factor_not_found: Factor not found' using errcode = 'P0002';
  end if;
  return f;
end
$$;

create function auth.mfa_enroll(factor_type text default 'totp', friendly_name text default null,
                                issuer text default null)
returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  c record;
  id uuid := pg_catalog.gen_random_uuid();
  t jsonb;
  limits jsonb := auth._mfa_settings();
  name text := nullif(pg_catalog.btrim(mfa_enroll.friendly_name), '');
  who text;
begin
  c := auth._mfa_caller();
  if (c.u).is_anonymous then
    raise exception 'no_authorization: Anonymous users cannot enroll factors' using errcode = '28000';
  end if;
  if mfa_enroll.factor_type is null or mfa_enroll.factor_type not in ('totp', 'phone', 'webauthn') then
    raise exception 'validation_failed: factor_type must be totp' using errcode = '22023';
  elsif mfa_enroll.factor_type <> 'totp' then
    raise exception 'mfa_%_enroll_not_enabled: MFA enroll is disabled for %', mfa_enroll.factor_type,
      mfa_enroll.factor_type using errcode = '22023';
  end if;
  if pg_catalog.length(name) > 256 or pg_catalog.length(mfa_enroll.issuer) > 256 then
    raise exception 'validation_failed: friendly_name and issuer are at most 256 characters' using errcode = '22023';
  end if;
  if c.has_verified and c.aal <> 'aal2' then
    raise exception 'insufficient_aal: AAL2 required to enroll a new factor' using errcode = '28000';
  end if;
  -- Unverified factors nobody finished are dropped after a challenge's lifetime.
  delete from auth.mfa_factors f
   where f.user_id = (c.u).id and f.status = 'unverified'
     and f.created_at < pg_catalog.now() - pg_catalog.make_interval(secs => (limits ->> 'challenge_expiry')::int);
  if name is not null and exists (select from auth.mfa_factors f where f.user_id = (c.u).id and f.friendly_name = name) then
    raise exception 'mfa_factor_name_conflict: A factor with the friendly name "%" for this user already exists', name
      using errcode = '23505';
  end if;
  if (select pg_catalog.count(*) from auth.mfa_factors f where f.user_id = (c.u).id) >= (limits ->> 'max_factors')::int then
    raise exception 'too_many_enrolled_mfa_factors: Maximum number of enrolled factors reached, unenroll to continue'
      using errcode = '53400';
  end if;
  who := nullif((c.u).email, '');
  if who is null then
    raise exception 'validation_failed: a TOTP factor needs an email address to name the account' using errcode = '22023';
  end if;
  t := auth._mfa_new_totp(id, coalesce(nullif(mfa_enroll.issuer, ''),
         nullif(pg_catalog.substring(auth._site_url(), '^[a-z]+://([^/:?#]+)'), ''), 'auth_ext'), who);
  insert into auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at, updated_at, secret)
  values (id, (c.u).id, name, 'totp', 'unverified', pg_catalog.now(), pg_catalog.now(), t ->> 'sealed');
  perform auth._audit('factor_in_progress', (c.u).id, pg_catalog.jsonb_build_object('factor_id', id, 'factor_type', 'totp'));
  return pg_catalog.jsonb_build_object('id', id, 'type', 'totp', 'friendly_name', coalesce(name, ''),
    'totp', pg_catalog.jsonb_build_object('qr_code', t ->> 'qr_code', 'secret', t ->> 'secret', 'uri', t ->> 'uri'));
end
$$;
comment on function auth.mfa_enroll(text, text, text) is
  'MFA: enroll a TOTP factor for the signed-in user (unverified until a code is verified); the secret is shown once.';

create function auth.mfa_challenge(factor_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  c record;
  f auth.mfa_factors;
  id uuid := pg_catalog.gen_random_uuid();
  at timestamptz := pg_catalog.clock_timestamp();
  ip text := auth._request_ip();
  limits jsonb;
begin
  c := auth._mfa_caller();
  f := auth._mfa_factor((c.u).id, mfa_challenge.factor_id);
  -- At most auth.mfa_rate_limit challenges a minute per user and per client address
  -- (each verification needs a challenge; the factor's row lock orders a user's calls).
  limits := auth._mfa_settings();
  if (limits ->> 'rate_limit')::int > 0 and (
       (select pg_catalog.count(*) from auth.mfa_challenges x join auth.mfa_factors y on y.id = x.factor_id
         where y.user_id = (c.u).id and x.created_at > at - interval '1 minute') >= (limits ->> 'rate_limit')::int
    or (ip is not null and (select pg_catalog.count(*) from auth.mfa_challenges x
         where x.ip_address = ip::inet and x.created_at > at - interval '1 minute') >= (limits ->> 'rate_limit')::int)) then
    raise exception 'over_request_rate_limit: Too many MFA challenges; try again in a minute' using errcode = '53400';
  end if;
  insert into auth.mfa_challenges (id, factor_id, created_at, ip_address)
  values (id, f.id, at, coalesce(ip, '0.0.0.0')::inet);
  update auth.mfa_factors x set last_challenged_at = at where x.id = f.id;
  return pg_catalog.jsonb_build_object('id', id, 'type', f.factor_type::text,
    'expires_at', pg_catalog.floor(pg_catalog.date_part('epoch', at
      + pg_catalog.make_interval(secs => (auth._mfa_settings() ->> 'challenge_expiry')::int)))::bigint);
end
$$;
comment on function auth.mfa_challenge(uuid) is
  'MFA: a challenge for one of the signed-in user''s factors, to verify with a code before it expires.';

create function auth.mfa_verify(factor_id uuid, challenge_id uuid, code text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  c record;
  f auth.mfa_factors;
  ch auth.mfa_challenges;
  step bigint;
begin
  c := auth._mfa_caller();
  if c.session_id is null then
    raise exception 'no_authorization: MFA needs a session: sign in first' using errcode = '28000';
  end if;
  -- The factor's row lock orders verifications, so a code is accepted once.
  f := auth._mfa_factor((c.u).id, mfa_verify.factor_id);
  if mfa_verify.code is null or mfa_verify.code = '' then
    raise exception 'validation_failed: Code is required' using errcode = '22023';
  end if;
  select * into ch from auth.mfa_challenges x
   where x.id = mfa_verify.challenge_id and x.factor_id = f.id and x.verified_at is null;
  if not found then
    raise exception 'mfa_factor_not_found: MFA factor with the provided challenge ID not found'
      using errcode = 'P0002';
  end if;
  if ch.ip_address <> coalesce(auth._request_ip(), '0.0.0.0')::inet then
    raise exception 'mfa_ip_address_mismatch: Challenge and verify IP addresses mismatch'
      using errcode = '28000';
  end if;
  if ch.created_at + pg_catalog.make_interval(secs => (auth._mfa_settings() ->> 'challenge_expiry')::int) < pg_catalog.now() then
    raise exception 'mfa_challenge_expired: MFA challenge % has expired, verify against another challenge or create a new challenge.',
      ch.id using errcode = '28000';
  end if;
  -- Counted before the code is checked (src/lockout.rs), on the factor and the address.
  perform auth._mfa_attempt_begin(f.id);
  step := auth._mfa_totp_step(f.id, f.secret, mfa_verify.code, f.last_verified_step);
  if step is null then
    perform auth._mfa_failed(f.id, (c.u).id);
    raise exception 'mfa_verification_failed: Invalid TOTP code entered' using errcode = '28000';
  end if;
  perform auth._attempt_succeeded();
  update auth.mfa_challenges x set verified_at = pg_catalog.now() where x.id = ch.id;
  update auth.mfa_factors x set status = 'verified', last_verified_step = step, updated_at = pg_catalog.now()
   where x.id = f.id;
  return auth._mfa_upgrade((c.u).id, c.session_id, f.id, 'totp');
end
$$;
comment on function auth.mfa_verify(uuid, uuid, text) is
  'MFA: verify a challenge with a code; the session becomes aal2 and new tokens are returned.';

-- The session reaches aal2 by `method`: its amr gains the method (newest first: the
-- clock, not the transaction's start, so it sorts after a sign-in of the same transaction), its
-- refresh tokens are replaced, the user's other aal1 sessions end, and other unverified
-- factors of the type go.
create function auth._mfa_upgrade(user_id uuid, session_id uuid, factor_id uuid, method text) returns jsonb
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  -- New tokens only for a live session of a user who may sign in (as a refresh checks).
  if exists (select from auth.users u where u.id = _mfa_upgrade.user_id and u.banned_until > pg_catalog.now()) then
    raise exception 'user_banned: User is banned' using errcode = '28000';
  end if;
  if not auth._session_is_live(_mfa_upgrade.session_id) then
    raise exception 'session_expired: Session has expired; sign in again' using errcode = '28000';
  end if;
  insert into auth.mfa_amr_claims as a (session_id, created_at, updated_at, authentication_method, id)
  values (_mfa_upgrade.session_id, pg_catalog.clock_timestamp(), pg_catalog.clock_timestamp(), method,
          pg_catalog.gen_random_uuid())
  on conflict on constraint mfa_amr_claims_session_id_authentication_method_pkey
  do update set created_at = pg_catalog.clock_timestamp(), updated_at = pg_catalog.clock_timestamp();
  update auth.sessions s set aal = 'aal2', factor_id = _mfa_upgrade.factor_id, updated_at = pg_catalog.now()
   where s.id = _mfa_upgrade.session_id;
  delete from auth.sessions s
   where s.user_id = _mfa_upgrade.user_id and s.id <> _mfa_upgrade.session_id
     and coalesce(s.aal, 'aal1') = 'aal1';
  delete from auth.mfa_factors f
   where f.user_id = _mfa_upgrade.user_id and f.id <> _mfa_upgrade.factor_id and f.status = 'unverified'
     and f.factor_type = (select g.factor_type from auth.mfa_factors g where g.id = _mfa_upgrade.factor_id);
  perform auth._audit('verification_attempted', _mfa_upgrade.user_id,
    pg_catalog.jsonb_build_object('factor_id', _mfa_upgrade.factor_id, 'method', method));
  return auth._mfa_session(_mfa_upgrade.user_id, _mfa_upgrade.session_id);
end
$$;

create function auth.mfa_challenge_and_verify(factor_id uuid, code text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  return auth.mfa_verify(factor_id, (auth.mfa_challenge(factor_id) ->> 'id')::uuid, code);
end
$$;
comment on function auth.mfa_challenge_and_verify(uuid, text) is
  'MFA: challenge a factor and verify it with a code in one call.';

create function auth.mfa_unenroll(factor_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  c record;
  f auth.mfa_factors;
begin
  c := auth._mfa_caller();
  f := auth._mfa_factor((c.u).id, mfa_unenroll.factor_id);
  if f.status = 'verified' and c.aal <> 'aal2' then
    raise exception 'insufficient_aal: AAL2 required to unenroll verified factor' using errcode = '28000';
  end if;
  perform auth._mfa_drop_factor(f);
  return pg_catalog.jsonb_build_object('id', f.id);
end
$$;
comment on function auth.mfa_unenroll(uuid) is
  'MFA: remove one of the signed-in user''s factors (a verified one needs an aal2 session).';

-- A factor goes: sessions it raised fall back to aal1 (their next tokens say so).
create function auth._mfa_drop_factor(f auth.mfa_factors) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
  delete from auth.mfa_amr_claims a
   using auth.sessions s
   where a.session_id = s.id and s.factor_id = f.id and a.authentication_method = f.factor_type::text;
  update auth.sessions s set aal = 'aal1', factor_id = null, updated_at = pg_catalog.now() where s.factor_id = f.id;
  delete from auth.mfa_factors x where x.id = f.id;
  -- Without a verified factor left, nothing of the user stays aal2 (a session raised by a
  -- recovery code is bound to no factor), and the recovery codes go.
  if not exists (select from auth.mfa_factors x where x.user_id = f.user_id and x.status = 'verified') then
    delete from auth.mfa_recovery_codes r where r.user_id = f.user_id;
    delete from auth.mfa_amr_claims a
     using auth.sessions s
     where a.session_id = s.id and s.user_id = f.user_id and a.authentication_method in ('totp', 'recovery');
    update auth.sessions s set aal = 'aal1', factor_id = null, updated_at = pg_catalog.now()
     where s.user_id = f.user_id and s.aal = 'aal2';
  end if;
  perform auth._audit('factor_deleted', f.user_id, pg_catalog.jsonb_build_object('factor_id', f.id));
end
$$;

create function auth.mfa_list_factors() returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users := auth._current_user(false);
  everything jsonb;
begin
  select coalesce(pg_catalog.jsonb_agg(auth._factor_json(f) order by f.created_at), '[]') into everything
    from auth.mfa_factors f where f.user_id = u.id;
  return pg_catalog.jsonb_build_object(
    'all', everything,
    'totp', coalesce((select pg_catalog.jsonb_agg(x) from pg_catalog.jsonb_array_elements(everything) x
                       where x ->> 'factor_type' = 'totp' and x ->> 'status' = 'verified'), '[]'),
    'phone', '[]'::jsonb);
end
$$;
comment on function auth.mfa_list_factors() is
  'MFA: the signed-in user''s factors: all of them, and the verified ones by type (supabase-js listFactors).';

create function auth.mfa_get_authenticator_assurance_level() returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  u auth.users := auth._current_user(false);
  current text := coalesce(auth.jwt() ->> 'aal', 'aal1');
begin
  return pg_catalog.jsonb_build_object(
    'currentLevel', current,
    'nextLevel', case when exists (select from auth.mfa_factors f where f.user_id = u.id and f.status = 'verified')
                      then 'aal2' else current end,
    'currentAuthenticationMethods', coalesce(auth.jwt() -> 'amr', '[]'));
end
$$;
comment on function auth.mfa_get_authenticator_assurance_level() is
  'MFA: the session''s assurance level and the next one the user can reach (supabase-js getAuthenticatorAssuranceLevel).';

create function auth.admin_mfa_list_factors(user_id uuid) returns jsonb
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
  perform auth._admin_user(admin_mfa_list_factors.user_id, false);
  return pg_catalog.jsonb_build_object('factors', coalesce((
    select pg_catalog.jsonb_agg(auth._factor_json(f) order by f.created_at)
      from auth.mfa_factors f where f.user_id = admin_mfa_list_factors.user_id), '[]'));
end
$$;
comment on function auth.admin_mfa_list_factors(uuid) is 'Admin: a user''s MFA factors.';

create function auth.admin_mfa_delete_factor(user_id uuid, factor_id uuid) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  f auth.mfa_factors;
begin
  perform auth._admin_user(admin_mfa_delete_factor.user_id, false);
  f := auth._mfa_factor(admin_mfa_delete_factor.user_id, admin_mfa_delete_factor.factor_id);
  perform auth._mfa_drop_factor(f);
  perform auth._audit_admin('factor_deleted', pg_catalog.jsonb_build_object(
    'user_id', f.user_id, 'factor_id', f.id));
  return auth._factor_json(f);
end
$$;
comment on function auth.admin_mfa_delete_factor(uuid, uuid) is
  'Admin: delete a user''s MFA factor (a lost device); sessions it raised fall back to aal1.';

-- For RLS: whether the signed-in user has a verified factor (Supabase's recipe reads
-- auth.mfa_factors itself; here no API role may read the auth tables, or a third party's
-- token mapped to it could, so the recipe asks this instead). False without a local user.
create function auth.mfa_enrolled() returns boolean
language plpgsql stable security definer parallel safe
set search_path = pg_catalog, pg_temp
as $$
begin
  return exists (select from auth.mfa_factors f where f.user_id = auth.uid() and f.status = 'verified');
end
$$;
comment on function auth.mfa_enrolled() is
  'MFA, for RLS: true when the signed-in user has a verified factor (then require aal2).';

-- Recovery codes: ten single-use codes for a user with a verified factor, from an aal2
-- session; a new set replaces the old one. Shown once.
create function auth.mfa_generate_recovery_codes() returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  c record;
  codes text[] := '{}';
  code text;
begin
  c := auth._mfa_caller();
  if not c.has_verified then
    raise exception 'mfa_factor_not_found: Recovery codes need a verified factor: enroll and verify one first'
      using errcode = 'P0002';
  end if;
  if c.aal <> 'aal2' then
    raise exception 'insufficient_aal: AAL2 required to generate recovery codes' using errcode = '28000';
  end if;
  delete from auth.mfa_recovery_codes r where r.user_id = (c.u).id;
  for i in 1..10 loop
    code := auth._mfa_recovery_code();
    codes := codes || code;
    insert into auth.mfa_recovery_codes (id, user_id, code_hash, created_at)
    values (pg_catalog.gen_random_uuid(), (c.u).id, auth._otp_hash((c.u).id::text || ':' || code), pg_catalog.now());
  end loop;
  perform auth._audit('recovery_codes_generated', (c.u).id, '{}');
  return pg_catalog.jsonb_build_object('recovery_codes', pg_catalog.to_jsonb(codes));
end
$$;
comment on function auth.mfa_generate_recovery_codes() is
  'MFA: ten single-use recovery codes for the signed-in user (aal2, with a verified factor); replaces any earlier set.';

-- A recovery code in place of a TOTP code: the session becomes aal2 (amr recovery). Wrong
-- codes count toward the lockout of the user's recovery codes and of the address.
create function auth.mfa_verify_recovery_code(code text) returns jsonb
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
  c record;
  normalized text := pg_catalog.lower(pg_catalog.regexp_replace(coalesce(code, ''), '[\s-]', '', 'g'));
  used uuid;
begin
  c := auth._mfa_caller();
  if c.session_id is null then
    raise exception 'no_authorization: MFA needs a session: sign in first' using errcode = '28000';
  end if;
  if normalized = '' or pg_catalog.length(normalized) > 64 then
    raise exception 'validation_failed: Code is required' using errcode = '22023';
  end if;
  perform auth._attempt_begin_named('mfa-recovery:' || (c.u).id::text);
  update auth.mfa_recovery_codes r set used_at = pg_catalog.now()
   where r.user_id = (c.u).id and r.used_at is null
     and r.code_hash = auth._otp_hash((c.u).id::text || ':' || pg_catalog.substr(normalized, 1, 4) || '-'
                                      || pg_catalog.substr(normalized, 5, 4) || '-' || pg_catalog.substr(normalized, 9, 4)
                                      || '-' || pg_catalog.substr(normalized, 13))
  returning r.id into used;
  if used is null then
    perform auth._mfa_recovery_failed((c.u).id);
    raise exception 'mfa_verification_failed: Invalid recovery code' using errcode = '28000';
  end if;
  perform auth._attempt_succeeded();
  perform auth._audit('recovery_code_used', (c.u).id, pg_catalog.jsonb_build_object('code_id', used));
  return auth._mfa_upgrade((c.u).id, c.session_id, null, 'recovery');
end
$$;
comment on function auth.mfa_verify_recovery_code(text) is
  'MFA: use one recovery code in place of a TOTP code; the session becomes aal2 (amr recovery).';

-- Account flows: the reauthentication nonce, the password-change proofs, the aal2 rule.
create or replace function auth._issue_otp(uid uuid, action text, address text, s jsonb) returns jsonb
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

-- cleanup: MFA challenges too.
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
  n_challenges bigint;
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
                            'mfa_challenges', n_challenges);
end
$$;

comment on function auth.cleanup(integer) is
  'Delete ended sessions, refresh tokens revoked longer than auth.revoked_token_retention, expired one-time tokens, outbox messages, PKCE flow states and MFA challenges, in batches.';

-- Privileges, as in sql/finalize.sql.
revoke all on function auth._mfa_caller(), auth._mfa_factor(uuid, uuid), auth._mfa_upgrade(uuid, uuid, uuid, text),
  auth._mfa_drop_factor(auth.mfa_factors), auth._factor_json(auth.mfa_factors),
  auth.mfa_enroll(text, text, text), auth.mfa_challenge(uuid), auth.mfa_verify(uuid, uuid, text),
  auth.mfa_challenge_and_verify(uuid, text), auth.mfa_unenroll(uuid), auth.mfa_list_factors(),
  auth.mfa_get_authenticator_assurance_level(), auth.admin_mfa_list_factors(uuid),
  auth.admin_mfa_delete_factor(uuid, uuid), auth.mfa_enrolled(), auth.mfa_generate_recovery_codes(),
  auth.mfa_verify_recovery_code(text), auth._password_change_proofs(auth.users, jsonb), auth.reauthenticate()
  from public;
revoke all on function auth."_current_password_matches" from public;
revoke all on function auth."_mfa_attempt_begin" from public;
revoke all on function auth."_mfa_failed" from public;
revoke all on function auth."_mfa_new_totp" from public;
revoke all on function auth."_mfa_recovery_code" from public;
revoke all on function auth."_mfa_recovery_failed" from public;
revoke all on function auth."_mfa_session" from public;
revoke all on function auth."_mfa_settings" from public;
revoke all on function auth."_mfa_totp_step" from public;
revoke all on function auth."_password_update_rules" from public;
revoke all on function auth."_request_ip" from public;
revoke all on function auth."_site_url" from public;
grant execute on function auth.reauthenticate() to anon, authenticated, service_role;
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
