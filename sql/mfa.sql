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
