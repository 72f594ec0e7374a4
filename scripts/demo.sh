#!/usr/bin/env bash
# Sets up everything, builds auth_ext (release), installs it into a local PostgreSQL 15
# cluster of its own (port 54329), runs a short demo and says how to connect.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PORT=${AUTH_EXT_DEMO_PORT:-54329}
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

cat <<MSG

auth_ext is running in PostgreSQL 15, database "$DB", port $PORT.
Connect:
  as the owner:                 sudo -u postgres psql -p $PORT $DB
  as the API login role:        psql "postgresql://authenticator:authenticator@localhost:$PORT/$DB"
Try (as the API login role, the way PostgREST calls an RPC):
  begin; set local role anon;
  select auth.sign_in('alice@example.com', 'alice-password-1');
  commit;
Stop it with:  pg_ctlcluster 15 $CLUSTER stop
MSG
