#!/usr/bin/env bash
# Builds auth_ext in release mode, starts a throwaway cluster, prints the figures of
# bench/bench.sql (every ratio against a baseline measured in the same run), then the
# pgbench throughput of sign-in, refresh and an API request at 1, 2, 4 and 8 clients, the
# lockout under a flood, known against unknown addresses, and password hashing under load.
# BENCH_SECONDS sets the length of each pgbench run (default 5); BENCH_SQL_ONLY=1 stops after
# bench/bench.sql (and skips building the server).
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export PG_CONFIG BENCH_SECONDS=${BENCH_SECONDS:-5}
bash scripts/deps.sh
log=$(mktemp)
if ! cargo pgrx install --release --pg-config "$PG_CONFIG" >"$log" 2>&1; then cat "$log"; exit 1; fi
if [ -z "${BENCH_SQL_ONLY:-}" ] && ! cargo build --release -p auth_ext_server --bin auth-ext-server --example bench >"$log" 2>&1; then cat "$log"; exit 1; fi
rm -f "$log"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, $(uname -sr), PostgreSQL $("$PG_CONFIG" --version | awk '{print $2}')"
pg_virtualenv -t -v 15 -o 'max_connections=200' bash bench/in-cluster.sh
