-- auth_ext 0.1.0 -> 0.2.0: the brute-force lockout (failed sign-in counters).
\echo Use "ALTER EXTENSION auth_ext UPDATE TO '0.2.0'" to load this file. \quit

-- Failed sign-ins per account ('email:<address>') and per client IP ('ip:<address>'),
-- counted in fixed windows for the brute-force lockout. Written by autonomous
-- transactions (a failed sign-in raises, which would roll back an ordinary write).
create table auth.sign_in_failures (
  key text not null primary key,
  window_start timestamptz not null,
  failures integer not null
);
comment on table auth.sign_in_failures is 'auth_ext: failed sign-in counters for the lockout. Owner only.';
revoke all on auth.sign_in_failures from public;

-- Autonomous jobs can now count failures; cleanup prunes old counting windows.
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
    insert into auth.sign_in_failures as f (key, window_start, failures)
    select k, pg_catalog.now(), 1
      from pg_catalog.jsonb_array_elements_text(job -> 'count_failures' -> 'keys') k
    on conflict (key) do update
       set failures = case when f.window_start > pg_catalog.now() - (job -> 'count_failures' ->> 'window')::pg_catalog.interval
                           then f.failures + 1 else 1 end,
           window_start = case when f.window_start > pg_catalog.now() - (job -> 'count_failures' ->> 'window')::pg_catalog.interval
                               then f.window_start else pg_catalog.now() end;
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
begin
  if batch_size is null or batch_size < 1 or batch_size > 100000 then
    raise exception 'validation_failed: batch_size must be between 1 and 100000'
      using errcode = '22023';
  end if;
  delete from auth.sessions d
   where d.id in (select s.id from auth.sessions s
                   where not auth._session_is_live(s.id)
                   limit batch_size
                   for update skip locked);
  get diagnostics n_sessions = row_count;
  delete from auth.refresh_tokens d
   where d.id in (select t.id from auth.refresh_tokens t
                   where t.revoked and t.updated_at < pg_catalog.now() - auth._seconds('auth.revoked_token_retention')
                   limit batch_size
                   for update skip locked);
  get diagnostics n_tokens = row_count;
  delete from auth.sign_in_failures f
   where f.window_start < pg_catalog.now() - auth._seconds('auth.lockout_window');
  return jsonb_build_object('sessions', n_sessions, 'refresh_tokens', n_tokens);
end
$$;

-- Benchmark support: sign-in without the password check, owner only.
create function auth._sign_in_without_password_check(email text) returns jsonb
strict volatile
language c
as 'MODULE_PATHNAME', '_sign_in_without_password_check_wrapper';
revoke all on function auth._sign_in_without_password_check(text) from public;
