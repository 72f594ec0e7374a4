#!/usr/bin/env bash
# Inside pg_virtualenv (bench/in-cluster.sh calls it): the HTTP server's overhead against the
# same transactions sent straight to PostgreSQL, then a bounded soak. Needs the release
# server and bench example (bench/run.sh builds them).
set -euo pipefail
cd "$(dirname "$0")/.."
db=auth_http_bench
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "drop database if exists $db with (force)" -c "create database $db"
psql -X -q -v ON_ERROR_STOP=1 -d "$db" <<'SQL'
create extension auth_ext;
do $$ begin
  if not exists (select from pg_roles where rolname = 'auth_bench_server') then
    create role auth_bench_server login noinherit password 'bench';
  end if;
end $$;
grant anon, authenticated, service_role to auth_bench_server;
alter role auth_bench_server set auth.trusted_proxies = 1;
-- Every benchmark client has one address: the soak's wrong passwords would lock it.
alter database auth_http_bench set auth.lockout_ip_max_failures = 0;
-- The benchmark signs in the same accounts many times: no lockout or session cap in the way.
select auth.admin_create_user(jsonb_build_object('email', 'bench' || i || '@example.com',
         'password', 'bench password 1234', 'email_confirm', true))
  from generate_series(0, 31) i \g /dev/null
SQL
anon=$(psql -X -A -t -d "$db" -c "select auth.sign_jwt('{\"role\": \"anon\"}')")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dsn="host=${PGHOST:-localhost} port=${PGPORT:-5432} dbname=$db user=auth_bench_server password=bench"
AUTH_DATABASE_URL="$dsn" AUTH_LISTEN="127.0.0.1:$port" AUTH_LOG=warn AUTH_POOL_SIZE=32 \
  target/release/auth-ext-server &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
  sleep 0.1
done
AUTH_URL="http://127.0.0.1:$port" ANON_KEY="$anon" SQL_DSN="$dsn" SERVER_PID=$server \
  BENCH_SECONDS="${BENCH_SECONDS:-5}" SOAK_SECONDS="${SOAK_SECONDS:-180}" \
  target/release/examples/bench
