#!/usr/bin/env bash
# Runs inside pg_virtualenv (PGHOST/PGPORT/PGUSER/PGPASSWORD point at a fresh cluster):
# the pg_regress golden files, then the client tests over real connections.
set -euo pipefail
cd "$(dirname "$0")/.."
bindir=$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --bindir)
pg_regress="$(dirname "$("${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}" --pgxs)")/../test/regress/pg_regress"

# setup first (it creates the extension), then every other file in name order.
tests=(setup)
for f in tests/pg_regress/sql/*.sql; do
  t=$(basename "$f" .sql)
  [ "$t" = setup ] || tests+=("$t")
done
out=$(mktemp -d)
if ! "$pg_regress" --inputdir=tests/pg_regress --outputdir="$out" --bindir="$bindir" \
      --dbname=auth_regress "${tests[@]}"; then
  cat "$out/regression.diffs"
  exit 1
fi

.venv/bin/python -m pytest tests/client -q -p no:cacheprovider
