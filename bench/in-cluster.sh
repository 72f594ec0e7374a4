#!/usr/bin/env bash
# Inside pg_virtualenv: the SQL figures, then pgbench.
set -euo pipefail
BENCH_SECONDS=${BENCH_SECONDS:-5}
cd "$(dirname "$0")/.."
bindir=$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)
createdb auth_bench
export PGDATABASE=auth_bench
psql -X -q -v ON_ERROR_STOP=1 -f bench/bench.sql
# BENCH_SQL_ONLY=1: the figures of bench/bench.sql alone (policies, tokens, algorithms,
# sessions, sign-in), without the load tests.
[ -z "${BENCH_SQL_ONLY:-}" ] || exit 0
psql -X -q -v ON_ERROR_STOP=1 -f bench/pgbench/setup.sql >/dev/null
echo "== 5. Concurrent throughput (pgbench -M prepared, ${BENCH_SECONDS}s per run)"
printf '%-10s %8s %10s %14s\n' workload clients tps latency_ms
for w in sign_in refresh request; do
  for c in 1 2 4 8; do
    out=$("$bindir/pgbench" -n -M prepared -T "$BENCH_SECONDS" -c "$c" -j "$c" -f "bench/pgbench/$w.sql" 2>&1)
    tps=$(echo "$out" | awk '/^tps/ {print $3; exit}')
    lat=$(echo "$out" | awk '/latency average/ {print $4; exit}')
    failed=$(echo "$out" | awk '/number of failed transactions/ {print $5; exit}')
    printf '%-10s %8s %10.0f %14s%s\n' "$w" "$c" "$tps" "$lat" "${failed:+  (failed: $failed)}"
  done
done
echo "== 6. The lockout under a flood (bench/lockout.py)"
.venv/bin/python bench/lockout.py
echo "== 7. Known and unknown addresses (bench/timing.py)"
.venv/bin/python bench/timing.py
echo "== 8. Password hashing under load (bench/hashing.py)"
.venv/bin/python bench/hashing.py
echo "== 9. The HTTP server against direct SQL, and a soak (bench/http.sh)"
bash bench/http.sh
