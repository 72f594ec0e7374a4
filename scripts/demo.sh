#!/usr/bin/env bash
# Sets up everything, builds auth_ext (release), installs it into a local PostgreSQL 15
# cluster of its own (port 54329), runs a short demo, starts the HTTP server (port 9999) and
# runs the supabase-js example against it, then says how to connect and how to stop.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PORT=${AUTH_EXT_DEMO_PORT:-54329}
HTTP_PORT=${AUTH_EXT_DEMO_HTTP_PORT:-9999}
STATE=target/demo
CLUSTER=auth_ext_demo
DB=auth_demo
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export PG_CONFIG

bash scripts/deps.sh

echo "==> building and installing auth_ext (release; a few minutes the first time)"
log=$(mktemp)
sudo_flag=""
[ -z "$SUDO" ] || sudo_flag=--sudo
if ! cargo pgrx install --release $sudo_flag --pg-config "$PG_CONFIG" >"$log" 2>&1; then
  cat "$log"
  exit 1
fi
if ! cargo build --release -p auth_ext_server >"$log" 2>&1; then
  cat "$log"
  exit 1
fi
rm -f "$log"

echo "==> starting cluster 15/$CLUSTER on port $PORT"
if ! pg_lsclusters -h | awk '{print $1 "/" $2}' | grep -qx "15/$CLUSTER"; then
  $SUDO pg_createcluster 15 "$CLUSTER" -p "$PORT" >/dev/null
fi
$SUDO pg_ctlcluster 15 "$CLUSTER" start 2>/dev/null || true
# A restart picks up a freshly installed shared library.
$SUDO pg_ctlcluster 15 "$CLUSTER" restart

as_postgres() { if [ -z "$SUDO" ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
psql_pg() { as_postgres psql -X -q -p "$PORT" -v ON_ERROR_STOP=1 "$@"; }
psql_pg -d postgres -c "drop database if exists $DB with (force)" -c "create database $DB"
echo "==> demo: sign up, sign in, and a query through row level security"
psql_pg -d "$DB" < scripts/demo.sql

echo "==> starting the HTTP server (GoTrue's API) on port $HTTP_PORT"
mkdir -p "$STATE"
if [ -f "$STATE/server.pid" ]; then kill "$(cat "$STATE/server.pid")" 2>/dev/null || true; sleep 0.5; fi
# The server's own login role: NOINHERIT, may become anon, authenticated and service_role.
psql_pg -d "$DB" <<'SQL'
do $$ begin
  if not exists (select from pg_roles where rolname = 'auth_server') then
    create role auth_server login noinherit password 'auth_server';
  end if;
end $$;
grant anon, authenticated, service_role, auth_oauth to auth_server;
alter role auth_server set auth.trusted_proxies = 1;
SQL
ANON_KEY=$(psql_pg -d "$DB" -A -t -c "select auth.sign_jwt('{\"role\": \"anon\"}')")
SERVICE_KEY=$(psql_pg -d "$DB" -A -t -c "select auth.sign_jwt('{\"role\": \"service_role\"}')")
AUTH_DATABASE_URL="postgresql://auth_server:auth_server@localhost:$PORT/$DB" \
AUTH_LISTEN="127.0.0.1:$HTTP_PORT" AUTH_LOG_FORMAT=text \
  nohup target/release/auth-ext-server >"$STATE/server.log" 2>&1 &
echo $! >"$STATE/server.pid"
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$HTTP_PORT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$HTTP_PORT/health" >/dev/null || { cat "$STATE/server.log"; exit 1; }

echo "==> supabase-js against it (examples/supabase-js/quickstart.mjs)"
SUPABASE_URL="http://localhost:$HTTP_PORT" SUPABASE_ANON_KEY="$ANON_KEY" node examples/supabase-js/quickstart.mjs

cat <<MSG

auth_ext is running in PostgreSQL 15, database "$DB", port $PORT, and GoTrue's HTTP API
(auth-ext-server) at http://localhost:$HTTP_PORT (log: $STATE/server.log).
  anon key:     $ANON_KEY
  service key:  $SERVICE_KEY   (servers only)

supabase-js, unmodified:
  import { createClient } from '@supabase/supabase-js'
  const supabase = createClient('http://localhost:$HTTP_PORT', '<anon key>')
  await supabase.auth.signInWithPassword({ email: 'alice@example.com', password: 'alice-password-1' })
  (on Node.js 20, which lacks WebSocket, also pass { realtime: { transport: ws } } as the example does)
or run the example again:
  SUPABASE_URL=http://localhost:$HTTP_PORT SUPABASE_ANON_KEY=$ANON_KEY node examples/supabase-js/quickstart.mjs

Connect with SQL:
  as the owner:                 sudo -u postgres psql -p $PORT $DB
  as the API login role:        psql "postgresql://authenticator:authenticator@localhost:$PORT/$DB"
  the README's Quick start:     sudo -u postgres createdb -p $PORT quickstart && sudo -u postgres psql -p $PORT quickstart
Stop everything:
  kill \$(cat $STATE/server.pid); pg_ctlcluster 15 $CLUSTER stop
MSG
