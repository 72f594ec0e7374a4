-- MFA with Supabase's semantics. Codes are time-based, so what needs a right code is in
-- the client tests (pyotp, otplib); here: enrollment's answer, every refusal with its
-- SQLSTATE and code, the factors in the user object, the aal2 rule of update_user, and
-- the RLS recipes. Runs in one transaction, rolled back.
begin;
set local auth.email_rate_limit = 0;
select (auth.sign_up('mfa-ann@example.io', 'correct horse battery') ->> 'access_token') as ann \gset
select (auth.sign_up('mfa-bob@example.io', 'correct horse battery') ->> 'access_token') as bob \gset
select (select id from auth.users where email = 'mfa-ann@example.io') as ann_id,
       (select id from auth.users where email = 'mfa-bob@example.io') as bob_id \gset

-- 1. Enroll as the user: the secret (32 base32 characters), the otpauth URI, an SVG QR code.
savepoint s;
select auth.authenticate(:'ann') is not null as ann_authenticated;
select x ->> 'type' as type, x ->> 'friendly_name' as friendly_name,
       length(x -> 'totp' ->> 'secret') as secret_length,
       (x -> 'totp' ->> 'uri') like 'otpauth://totp/%:mfa-ann%40example.io?secret=%&issuer=%' as uri_ok,
       (x -> 'totp' ->> 'qr_code') like '<?xml%<svg%' as qr_is_svg
  from auth.mfa_enroll('totp', 'phone', 'Example') x;
select (auth.mfa_list_factors() -> 'all' -> 0 ->> 'status') as status,
       jsonb_array_length(auth.mfa_list_factors() -> 'totp') as verified_totp;
select auth."user"() -> 'factors' -> 0 ->> 'friendly_name' as factor_in_user;
-- Refusals.
select try($$select auth.mfa_enroll('totp', 'phone')$$) as same_name;
select try($$select auth.mfa_enroll('phone')$$) as phone;
select try($$select auth.mfa_enroll('sms')$$) as unknown_type;
select try($$select auth.mfa_challenge('00000000-0000-4000-8000-000000000000')$$) as no_factor;
select try('select * from auth.mfa_factors') as factors_hidden;
select auth.mfa_list_factors() -> 'all' -> 0 ->> 'id' as fid \gset
select auth.mfa_challenge(:'fid') ->> 'id' as cid \gset
select try(format('select auth.mfa_verify(%L, %L, %L)', :'fid', gen_random_uuid(), '123456')) as no_challenge;
select try('select * from auth.mfa_challenges') as challenges_hidden;
select try(format('select auth.mfa_verify(%L, %L, %L)', :'fid', :'cid', '')) as empty_code;
-- The stored secret is sealed: not the base32 secret the user saw.
reset role;
select secret like 'v1:%' as sealed from auth.mfa_factors;
rollback to savepoint s;

-- 2. Another user's factor does not exist for this one; an unverified factor can go at aal1.
savepoint s;
select auth.authenticate(:'ann') is not null as ann_authenticated;
select (auth.mfa_enroll() ->> 'id') as fid \gset
select auth.authenticate(:'bob') is not null as bob_authenticated;
select try(format('select auth.mfa_challenge(%L)', :'fid')) as not_bobs;
select try(format('select auth.mfa_unenroll(%L)', :'fid')) as not_bobs_either;
select auth.authenticate(:'ann') is not null as ann_again;
select auth.mfa_unenroll(:'fid') ->> 'id' = :'fid' as unenrolled;
rollback to savepoint s;

-- 3. With a verified factor (set here as the owner: verifying needs a code of now), an
-- aal1 session may not change the password or the address, enroll or unenroll.
savepoint s;
select auth.authenticate(:'ann') is not null as ann_authenticated;
select (auth.mfa_enroll() ->> 'id') as fid \gset
reset role;
update auth.mfa_factors set status = 'verified' where id = :'fid';
select auth.authenticate(:'ann') is not null as ann_authenticated;
select try($$select auth.update_user('{"password": "a brand new passphrase"}')$$) as password_at_aal1;
select try($$select auth.update_user('{"email": "other@example.io"}')$$) as email_at_aal1;
select try($$select auth.update_user('{"data": {"theme": "dark"}}')$$) as data_at_aal1;
select try($$select auth.mfa_enroll()$$) as enroll_at_aal1;
select try(format('select auth.mfa_unenroll(%L)', :'fid')) as unenroll_at_aal1;
select auth.mfa_get_authenticator_assurance_level() - 'currentAuthenticationMethods' as levels;
rollback to savepoint s;

-- 3b. Verification with a right code, computed here by a TOTP of our own in SQL (RFC 6238
-- over pgcrypto's HMAC-SHA1, an implementation independent of the extension's).
create extension if not exists pgcrypto;
create function pg_temp.base32_decode(s text) returns bytea
language plpgsql immutable as $$
declare
  bits text := '';
  out bytea := '';
  c text;
begin
  foreach c in array regexp_split_to_array(upper(s), '') loop
    bits := bits || lpad((strpos('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', c) - 1)::bit(5)::text, 5, '0');
  end loop;
  for i in 0 .. length(bits) / 8 - 1 loop
    out := out || set_byte('\x00'::bytea, 0, substr(bits, i * 8 + 1, 8)::bit(8)::int);
  end loop;
  return out;
end $$;
create function pg_temp.totp(secret text, step_offset int default 0) returns text
language plpgsql volatile as $$
declare
  counter bigint := floor(extract(epoch from clock_timestamp()) / 30)::bigint + step_offset;
  mac bytea := hmac(int8send(counter), pg_temp.base32_decode(secret), 'sha1');
  o int := get_byte(mac, 19) & 15;
begin
  -- (SQL's bit operators share one precedence: every shift in parentheses.)
  return lpad(((((get_byte(mac, o) & 127) << 24) | (get_byte(mac, o + 1) << 16)
                | (get_byte(mac, o + 2) << 8) | get_byte(mac, o + 3)) % 1000000)::text, 6, '0');
end $$;
savepoint s;
select auth.authenticate(:'ann') is not null as ann_authenticated;
select x ->> 'id' as fid, x -> 'totp' ->> 'secret' as secret from (select auth.mfa_enroll('totp') as x) e \gset
select auth.mfa_challenge(:'fid') ->> 'id' as cid \gset
select pg_temp.totp(:'secret') as code \gset
select v ->> 'access_token' as aal2, v ->> 'refresh_token' as aal2_refresh
  from auth.mfa_verify(:'fid', :'cid', :'code') v \gset
select auth.verify_jwt(:'aal2') ->> 'aal' as aal,
       jsonb_path_query_array(auth.verify_jwt(:'aal2') -> 'amr', '$[*].method') as amr;
-- The same code again (a new challenge), and the challenge again: refused.
select try(format('select auth.mfa_challenge_and_verify(%L, %L)', :'fid', :'code')) as replayed_code;
select try(format('select auth.mfa_verify(%L, %L, %L)', :'fid', :'cid', pg_temp.totp(:'secret', 1))) as used_challenge;
-- A challenge older than auth.mfa_challenge_expiry (aged here as the owner).
select auth.mfa_challenge(:'fid') ->> 'id' as old_cid \gset
reset role;
update auth.mfa_challenges set created_at = now() - interval '6 minutes' where id = :'old_cid';
select auth.authenticate(:'aal2') is not null as aal2_authenticated;
select regexp_replace(try(format('select auth.mfa_verify(%L, %L, %L)', :'fid', :'old_cid', pg_temp.totp(:'secret', 1))),
                      '[0-9a-f-]{36}', '<id>') as expired;
-- At aal2: recovery codes, and unenrolling a verified factor.
select jsonb_array_length(auth.mfa_generate_recovery_codes() -> 'recovery_codes') as recovery_codes;
select auth.mfa_unenroll(:'fid') ->> 'id' = :'fid' as unenrolled_at_aal2;
-- The session fell back to aal1: its next tokens say so.
select auth.verify_jwt(auth.refresh(:'aal2_refresh') ->> 'access_token') ->> 'aal' as after_unenroll;
rollback to savepoint s;

-- 4. Privileges: anon has no factors; the admin functions are service_role's.
savepoint s;
set local role anon;
select try($$select auth.mfa_enroll()$$) as anon_enroll;
select try($$select auth.admin_mfa_list_factors('00000000-0000-4000-8000-000000000000')$$) as anon_admin;
reset role;
set local role service_role;
select try($$select auth.admin_mfa_list_factors('00000000-0000-4000-8000-000000000000')$$) as unknown_user;
rollback to savepoint s;

-- 5. The RLS recipes of the README. A restrictive policy requiring aal2:
create table public.mfa_notes (owner uuid, body text);
insert into public.mfa_notes select id, 'note of ' || email from auth.users where email like 'mfa-%';
alter table public.mfa_notes enable row level security;
create policy own on public.mfa_notes to authenticated using (owner = (select auth.uid()));
create policy "require aal2" on public.mfa_notes as restrictive to authenticated
  using ((select auth.jwt() ->> 'aal') = 'aal2');
grant select on public.mfa_notes to authenticated;
savepoint s;
select set_config('request.jwt.claims', json_build_object('role', 'authenticated', 'aal', 'aal1',
  'sub', :'ann_id')::text, true) is not null as aal1_claims;
set local role authenticated;
select count(*) as rows_at_aal1 from public.mfa_notes;
select set_config('request.jwt.claims', json_build_object('role', 'authenticated', 'aal', 'aal2',
  'sub', :'ann_id')::text, true) is not null as aal2_claims;
select body as row_at_aal2 from public.mfa_notes;
rollback to savepoint s;
-- The variant: aal2 only of users who have a verified factor.
drop policy "require aal2" on public.mfa_notes;
create policy "aal2 if enrolled" on public.mfa_notes as restrictive to authenticated using (
  (select auth.jwt() ->> 'aal') = 'aal2' or not (select auth.mfa_enrolled()));
insert into auth.mfa_factors (id, user_id, factor_type, status, created_at, updated_at)
  select gen_random_uuid(), id, 'totp', 'verified', now(), now() from auth.users where email = 'mfa-ann@example.io';
savepoint s;
set local role authenticated;
select set_config('request.jwt.claims', json_build_object('role', 'authenticated', 'aal', 'aal1',
  'sub', :'ann_id')::text, true) is not null as ann_aal1;
select count(*) as ann_rows_at_aal1 from public.mfa_notes;
select set_config('request.jwt.claims', json_build_object('role', 'authenticated', 'aal', 'aal1',
  'sub', :'bob_id')::text, true) is not null as bob_aal1;
select body as bob_row_without_factor from public.mfa_notes;
rollback to savepoint s;
rollback;
