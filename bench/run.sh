#!/usr/bin/env bash
# Builds auth_ext in release mode, starts a throwaway cluster and prints the figures of
# bench/bench.sql: every ratio is against a baseline measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export PG_CONFIG
bash scripts/deps.sh
log=$(mktemp)
if ! cargo pgrx install --release --pg-config "$PG_CONFIG" >"$log" 2>&1; then cat "$log"; exit 1; fi
rm -f "$log"
pg_virtualenv -t -v 15 psql -X -q -v ON_ERROR_STOP=1 -f bench/bench.sql
