#!/usr/bin/env bash
# Runs every test: formatting and lints, Rust unit tests and #[pg_test]s, then pg_regress
# and the client tests against a throwaway cluster. Works as root (CI) or as a sudoer.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
export PG_CONFIG

bash scripts/deps.sh

echo "==> rustfmt and clippy"
cargo fmt --all --check
cargo clippy --quiet --all-targets --features "pg15 pg_test" --no-default-features -- -D warnings
cargo clippy --quiet -p auth_ext_server --all-targets -- -D warnings

echo "==> Rust unit tests and #[pg_test] (cargo pgrx test)"
# Postgres refuses to run as root: the test cluster belongs to postgres, in a fresh dir.
pgdata=$(mktemp -u /tmp/auth_ext_pgrx.XXXXXX)
trap 'rm -rf "$pgdata"' EXIT
cargo pgrx test pg15 --runas postgres --pgdata "$pgdata"

echo "==> the HTTP server: unit tests and build"
cargo test --quiet -p auth_ext_server
cargo build --quiet -p auth_ext_server

echo "==> installing the extension for pg_regress and the client tests"
cargo pgrx install --pg-config "$PG_CONFIG" >/dev/null
# Earlier versions' install scripts, for the upgrade test.
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
$SUDO install -m 644 sql/archive/auth_ext--*.sql "$("$PG_CONFIG" --sharedir)/extension/"

echo "==> pg_regress and client tests in a throwaway cluster"
pg_virtualenv -t -v 15 -o 'max_connections=200' bash scripts/cluster-tests.sh
