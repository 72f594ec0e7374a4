-- auth_ext figures. Times are the median of several runs, taken with clock_timestamp()
-- inside one plpgsql function, so client round trips are not counted.
\pset footer off
\pset border 1
set client_min_messages = warning;
create extension auth_ext;
set max_parallel_workers_per_gather = 0;   -- one backend: compare per-row cost, not parallelism

create function median_ms(q text, runs int) returns numeric language plpgsql as $$
declare t timestamptz; xs double precision[] := '{}';
begin
  for i in 1..runs loop
    t := clock_timestamp();
    execute q;
    xs := xs || extract(epoch from clock_timestamp() - t) * 1000;
  end loop;
  return round((select percentile_cont(0.5) within group (order by x) from unnest(xs) x)::numeric, 3);
end $$;
grant execute on function median_ms(text, int) to public;

-- Medians of two statements timed alternately, so that both see the same machine.
create function median_pair_ms(q1 text, q2 text, runs int) returns numeric[] language plpgsql as $$
declare t timestamptz; a double precision[] := '{}'; b double precision[] := '{}';
begin
  for i in 1..runs loop
    t := clock_timestamp();
    execute q1;
    a := a || extract(epoch from clock_timestamp() - t) * 1000;
    t := clock_timestamp();
    execute q2;
    b := b || extract(epoch from clock_timestamp() - t) * 1000;
  end loop;
  return array[round((select percentile_cont(0.5) within group (order by x) from unnest(a) x)::numeric, 3),
               round((select percentile_cont(0.5) within group (order by x) from unnest(b) x)::numeric, 3)];
end $$;

-- Supabase's own definition, the reference.
create function public.supabase_uid() returns uuid language sql stable as $$
  select coalesce(
    nullif(current_setting('request.jwt.claim.sub', true), ''),
    (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
  )::uuid
$$;

\echo '== 1. RLS policy over 1,000,000 rows (1,000 users), as authenticated with PostgREST-style claims'
create table items (id bigint primary key, user_id uuid not null, payload text);
insert into items
select g, ('00000000-0000-4000-8000-' || lpad(to_hex(g % 1000), 12, '0'))::uuid, 'row ' || g
  from generate_series(1, 1000000) g;
vacuum analyze items;
alter table items enable row level security;
grant select on items to authenticated;
create temp table results (variant text, ms numeric);
grant all on results to public;

-- A real session, so that auth.session_check has a live session to look up.
select set_config('bench.session_id',
  auth.verify_jwt(auth.sign_up('policy@example.com', 'policy-password-1') ->> 'access_token') ->> 'session_id', false) is not null as session_ready \gset

create or replace function bench_policy(variant text, qual text, check_sessions boolean default false) returns void language plpgsql as $$
begin
  perform set_config('auth.session_check', check_sessions::text, true);
  execute 'drop policy if exists p on items';
  execute format('create policy p on items for select to authenticated using (%s)', qual);
  -- A full PostgREST-style claims object, as the request would carry it.
  perform set_config('request.jwt.claims', json_build_object(
      'sub', '00000000-0000-4000-8000-00000000002a', 'role', 'authenticated', 'aud', 'authenticated',
      'email', 'user42@example.com', 'aal', 'aal1', 'session_id', current_setting('bench.session_id'),
      'app_metadata', json_build_object('provider', 'email', 'providers', json_build_array('email')),
      'user_metadata', json_build_object('name', 'User 42'), 'is_anonymous', false)::text, true);
  execute 'set local role authenticated';
  insert into results values (variant, median_ms('select count(*) from items', 5));
  execute 'reset role';
end $$;

begin;
do $$ begin
  perform bench_policy('constant uuid (baseline)', $q$user_id = '00000000-0000-4000-8000-00000000002a'::uuid$q$);
  perform bench_policy('auth.uid() direct', 'user_id = auth.uid()');
  perform bench_policy('(select auth.uid())', 'user_id = (select auth.uid())');
  perform bench_policy('Supabase SQL uid() direct', 'user_id = public.supabase_uid()');
  perform bench_policy('auth.uid() direct, session_check on', 'user_id = auth.uid()', true);
end $$;
select variant, ms as median_ms,
       round(ms / (select ms from results where variant like 'constant%'), 2) as vs_constant
  from results order by ms;
commit;

\echo '== 2. Token checks against a pure-SQL HS256 reference (pgcrypto hmac, the way pgjwt does it)'
\o /dev/null
select auth.set_jwt_secret('bench-secret-bench-secret-bench-secret-0123');
\o
create extension pgcrypto;
create function ref_b64url_decode(t text) returns bytea language sql immutable as $$
  select decode(rpad(translate(t, '-_', '+/'), 4 * ((length(t) + 3) / 4), '='), 'base64')
$$;
create function ref_b64url_encode(b bytea) returns text language sql immutable as $$
  select translate(rtrim(replace(encode(b, 'base64'), E'\n', ''), '='), '+/', '-_')
$$;
-- The same work as auth.verify_jwt: three segments, the header's alg, the signature,
-- the claims decoded, exp checked.
create function ref_verify(token text, secret text) returns jsonb language plpgsql stable as $$
declare
  parts text[] := string_to_array(token, '.');
  claims jsonb;
begin
  if coalesce(array_length(parts, 1), 0) <> 3 then raise exception 'malformed token'; end if;
  if convert_from(ref_b64url_decode(parts[1]), 'UTF8')::jsonb ->> 'alg' is distinct from 'HS256' then
    raise exception 'algorithm not accepted';
  end if;
  if ref_b64url_encode(hmac(parts[1] || '.' || parts[2], secret, 'sha256')) <> parts[3] then
    raise exception 'invalid signature';
  end if;
  claims := convert_from(ref_b64url_decode(parts[2]), 'UTF8')::jsonb;
  if (claims ->> 'exp')::numeric < extract(epoch from now()) - 30 then raise exception 'expired'; end if;
  return claims;
end $$;
create function ref_sign(claims jsonb, secret text) returns text language sql stable as $$
  select hp || '.' || ref_b64url_encode(hmac(hp, secret, 'sha256'))
    from (select ref_b64url_encode(convert_to('{"alg":"HS256","typ":"JWT"}', 'UTF8')) || '.'
                 || ref_b64url_encode(convert_to(claims::text, 'UTF8')) as hp) x
$$;
select auth.sign_up('bench@example.com', 'bench-password-1') ->> 'access_token' as tok \gset
select (ref_verify(:'tok', 'bench-secret-bench-secret-bench-secret-0123') = auth.verify_jwt(:'tok')) as reference_agrees,
       auth.verify_jwt(ref_sign('{"role": "anon"}', 'bench-secret-bench-secret-bench-secret-0123')) ->> 'role' as reference_token_verifies;
create temp table token_results (what text, ours_us numeric, reference_us numeric);
-- Tokens the backend has never seen: the sign-in token's own header and claims, in the
-- claims' own order, each with a session_id of its own, signed as the reference signs; eight
-- batches of 2,000, each run of "verify first time" takes a batch it has not verified.
select split_part(:'tok', '.', 1) as tok_header,
       convert_from(ref_b64url_decode(split_part(:'tok', '.', 2)), 'UTF8') as claims_text \gset
create temp table first_tokens (batch int, t text);
insert into first_tokens
select b, hp || '.' || ref_b64url_encode(hmac(hp, 'bench-secret-bench-secret-bench-secret-0123', 'sha256'))
  from (select g / 2000 + 1 as b,
               :'tok_header' || '.' || ref_b64url_encode(convert_to(regexp_replace(:'claims_text',
                 '"session_id":"[^"]*"', '"session_id":"' || gen_random_uuid() || '"'), 'UTF8')) as hp
          from generate_series(0, 15999) g) x;
create sequence first_batch;
do $$ begin
  if (select count(distinct t) from first_tokens) <> 16000
     or (select count(distinct auth.verify_jwt(t) ->> 'session_id') from first_tokens where batch = 8) <> 2000 then
    raise exception 'the first-time tokens are not 16,000 distinct valid tokens';
  end if;
end $$;
select setval('first_batch', 1, false) is not null as first_batch_ready \gset
insert into token_results
select 'verify again (remembered)', round(median_ms(format('select count(auth.verify_jwt(%L || '''')) from generate_series(1, 20000)', :'tok'), 5) / 20, 2),
                 round(median_ms(format('select count(ref_verify(%L || '''', %L)) from generate_series(1, 2000)', :'tok', 'bench-secret-bench-secret-bench-secret-0123'), 5) / 2, 2);
insert into token_results
select 'verify first time',
       round(median_ms('select count(auth.verify_jwt(t)) from first_tokens where batch = (select nextval(''first_batch''))', 7) / 2, 2),
       round(median_ms(format('select count(ref_verify(t, %L)) from first_tokens where batch = 1', 'bench-secret-bench-secret-bench-secret-0123'), 5) / 2, 2);
insert into token_results
select 'verify first time input alone',
       round(median_ms('select count(t) from first_tokens where batch = 1', 7) / 2, 2),
       round(median_ms('select count(t) from first_tokens where batch = 1', 7) / 2, 2);
insert into token_results
select 'sign', round(median_ms($q$select count(auth.sign_jwt(jsonb_build_object('role', 'anon', 'n', g))) from generate_series(1, 20000) g$q$, 5) / 20, 2),
               round(median_ms($q$select count(ref_sign(jsonb_build_object('role', 'anon', 'n', g), 'bench-secret-bench-secret-bench-secret-0123')) from generate_series(1, 2000) g$q$, 5) / 2, 2);
-- What bounds a first verify_jwt: returning the claims as jsonb means building a jsonb of them.
insert into token_results
select 'claims text to jsonb only', round(median_ms(format('select count((%L || repeat('' '', g %% 2))::jsonb) from generate_series(1, 20000) g', :'claims_text'), 5) / 20, 2), null;
-- The inputs alone, built the same way (the token text; the claims object to sign), so
-- that the net ratios compare the work of verifying and signing, net of making what they
-- are given.
insert into token_results
select 'verify again (remembered) input alone', round(median_ms(format('select count(%L || '''') from generate_series(1, 20000)', :'tok'), 5) / 20, 2),
                             round(median_ms(format('select count(%L || '''') from generate_series(1, 2000)', :'tok'), 5) / 2, 2);
insert into token_results
select 'sign input alone', round(median_ms($q$select count(jsonb_build_object('role', 'anon', 'n', g)) from generate_series(1, 20000) g$q$, 5) / 20, 2),
                           round(median_ms($q$select count(jsonb_build_object('role', 'anon', 'n', g)) from generate_series(1, 2000) g$q$, 5) / 2, 2);
select what, ours_us as auth_ext_us, reference_us as sql_reference_us,
       round(1e6 / ours_us) as auth_ext_per_s, round(1e6 / reference_us) as sql_reference_per_s,
       round(reference_us / ours_us, 1) as speedup
  from token_results order by what desc;
select o.what, round(o.ours_us - i.ours_us, 2) as auth_ext_net_us,
       round(o.reference_us - i.reference_us, 2) as sql_reference_net_us,
       round((o.reference_us - i.reference_us) / nullif(o.ours_us - i.ours_us, 0), 1) as net_speedup,
       case when o.what like 'verify%' then 12 else 6 end as target
  from token_results o join token_results i on i.what = o.what || ' input alone'
 order by o.what desc;

\echo '== 2b. Signing algorithms: sign, verify a token seen for the first time, verify it again (remembered by the backend)'
-- Each first-time run verifies 500 tokens it has never seen (a fresh batch per run); the
-- repeated run verifies one token 20,000 times. HS256 is the baseline of the same run.
create temp table alg_results (alg text, sign_us numeric, first_verify_us numeric, repeat_verify_us numeric);
create temp table alg_tokens (alg text, batch int, t text);
create sequence alg_batch;
create function bench_alg(alg text) returns void language plpgsql as $$
declare kid text; one text;
begin
  kid := auth.create_signing_key(alg) ->> 'kid';
  perform auth.promote_signing_key(kid);
  insert into alg_tokens
  select alg, b, auth.sign_jwt(jsonb_build_object('sub', gen_random_uuid(), 'role', 'authenticated', 'n', g))
    from generate_series(1, 5) b, generate_series(1, 500) g;
  one := (select t from alg_tokens a where a.alg = bench_alg.alg limit 1);
  perform setval('alg_batch', 1, false);
  insert into alg_results values (
    alg,
    round(median_ms($q$select count(auth.sign_jwt(jsonb_build_object('role', 'anon', 'n', g))) from generate_series(1, 500) g$q$, 5) * 2, 2),
    round(median_ms(format('select count(auth.verify_jwt(t)) from alg_tokens where alg = %L and batch = (select nextval(''alg_batch''))', alg), 5) * 2, 2),
    round(median_ms(format('select count(auth.verify_jwt(%L || '''')) from generate_series(1, 20000)', one), 5) / 20, 2));
end $$;
do $$ begin
  perform bench_alg('HS256'); perform bench_alg('ES256'); perform bench_alg('RS256'); perform bench_alg('EdDSA');
end $$;
select r.alg, r.sign_us, r.first_verify_us, r.repeat_verify_us,
       round(r.first_verify_us / nullif(r.repeat_verify_us, 0), 1) as remembered_speedup,
       round(r.first_verify_us / h.first_verify_us, 1) as first_verify_vs_hs256,
       round(r.repeat_verify_us / h.repeat_verify_us, 1) as repeat_verify_vs_hs256
  from alg_results r, alg_results h where h.alg = 'HS256'
 order by array_position(array['HS256', 'ES256', 'RS256', 'EdDSA'], r.alg);
-- Back to the HS256 key the rest of the figures use.
select auth.promote_signing_key((select kid from auth.list_signing_keys() where algorithm = 'HS256' order by created_at limit 1)) is not null as hs256_back \gset

\echo '== 3. Refresh (rotation) and the session check'
create function refresh_chain(n int) returns void language plpgsql as $$
declare t text := auth.sign_up('chain-' || gen_random_uuid() || '@example.com', 'chain-password-1') ->> 'refresh_token';
begin
  for i in 1..n loop t := auth.refresh(t) ->> 'refresh_token'; end loop;
end $$;
create function session_checks(n int, lookups boolean) returns void language plpgsql as $$
declare
  -- The verdict is kept per transaction and session: alternating between two sessions
  -- makes every call look its session up, one session makes every call a cache hit.
  sids text[] := array[current_setting('bench.session_id'),
                       auth.verify_jwt(auth.sign_up('alt-' || gen_random_uuid() || '@example.com',
                                                    'alt-password-1') ->> 'access_token') ->> 'session_id'];
begin
  for i in 1..n loop
    perform set_config('request.jwt.claims', json_build_object('sub', gen_random_uuid(),
              'session_id', sids[case when lookups then 1 + i % 2 else 1 end])::text, true);
    perform auth.uid();
  end loop;
end $$;
-- A chain of 200 refreshes minus the sign-up that starts it.
select round((median_ms('select refresh_chain(200)', 3) - median_ms('select refresh_chain(0)', 3)) / 200, 3) as refresh_ms;
set auth.session_check = on;
select round(median_ms('select session_checks(2000, false)', 5) * 1000 / 2000, 2) as new_claims_same_session_us,
       round(median_ms('select session_checks(2000, true)', 5) * 1000 / 2000, 2) as new_claims_session_lookup_us;
reset auth.session_check;

-- The lockout check still runs, but its thresholds stay out of reach of the repeated
-- wrong passwords below.
set auth.lockout_max_failures = 1000000;
set auth.lockout_ip_max_failures = 1000000;
\echo '== 4. Password sign-in (argon2id m=19456 t=2 p=1) and enumeration timing'
create function try_wrong(email text) returns void language plpgsql as $$
begin
  perform auth.sign_in(email, 'not-the-password');
exception when invalid_password then null;
end $$;
select encrypted_password as bench_hash from auth.users where email = 'bench@example.com' \gset
-- The part of sign-in beyond the password hash, measured on its own: the same code with
-- the password check left out. The extension creates no SQL function for it (one that
-- signs in without a password must not exist in a user's database); the library has the
-- symbol, declared here for this measurement only, in a schema of the benchmark's own.
create schema auth_bench;
create function auth_bench.verify_password(text, text) returns boolean
  language c volatile strict as 'auth_ext', '_verify_password_wrapper';
create function auth_bench.sign_in_without_password_check(text) returns jsonb
  language c volatile strict as 'auth_ext', '_sign_in_without_password_check_wrapper';
select a.sign_in_ok_ms, a.password_check_ms, a.sign_in_beyond_hash_ms,
       a.pair[1] as wrong_password_ms, a.pair[2] as unknown_email_ms,
       round(abs(a.pair[2] - a.pair[1]) / a.pair[1] * 100, 1) as unknown_vs_wrong_pct
  from (select median_ms($$select auth.sign_in('bench@example.com', 'bench-password-1')$$, 15) as sign_in_ok_ms,
               median_ms(format('select auth_bench.verify_password(%L, %L)', 'bench-password-1', :'bench_hash'), 15) as password_check_ms,
               median_ms($$select auth_bench.sign_in_without_password_check('bench@example.com')$$, 200) as sign_in_beyond_hash_ms,
               median_pair_ms($$select try_wrong('bench@example.com')$$, $$select try_wrong('nobody@example.com')$$, 41) as pair) a;
