#!/usr/bin/env bash
# Installs what building and testing auth_ext needs on Debian bookworm, skipping whatever
# is already there: PostgreSQL 15 with its server headers, sudo, cargo-pgrx 0.18.1 (pinned:
# it must match the pgrx crate), pgrx's configuration, a Python venv for the client tests,
# PgBouncer and the pinned supabase-js for the HTTP server's tests.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
PGRX_VERSION=0.18.1
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo

say() { printf '==> %s\n' "$*"; }

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install a Rust toolchain (rustup, 1.88 or newer) first." >&2
  exit 1
fi

# Server and headers in one apt command, so both are the same minor version.
pkgs=(postgresql-15 postgresql-server-dev-15 postgresql-common sudo pgbouncer curl)
command -v python3 >/dev/null 2>&1 || pkgs+=(python3 python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
# Bare containers lack the socket directory.
$SUDO install -d -o postgres -g postgres -m 2775 /var/run/postgresql

if ! cargo pgrx --version 2>/dev/null | grep -q " $PGRX_VERSION"; then
  say "installing cargo-pgrx $PGRX_VERSION (several minutes, once)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi
pgrx_home=${PGRX_HOME:-$HOME/.pgrx}
if ! grep -q "^pg15 *= *\"$PG_CONFIG\"" "$pgrx_home/config.toml" 2>/dev/null; then
  say "cargo pgrx init --pg15 $PG_CONFIG"
  cargo pgrx init --pg15 "$PG_CONFIG" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  say "creating .venv for the client tests"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import psycopg, jwt, pytest, argon2, supabase_auth, pyotp' 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r tests/client/requirements.txt
fi

# The official supabase-js client for the HTTP server's client tests and the demo (pinned
# in each package-lock.json; it needs Node.js 20 or later).
if ! command -v node >/dev/null 2>&1 || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "Node.js 20 or later is needed for the supabase-js tests (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
for dir in tests/js examples/supabase-js; do
  if [ ! -f $dir/node_modules/@supabase/supabase-js/package.json ] || [ $dir/package-lock.json -nt $dir/node_modules ]; then
    say "installing supabase-js in $dir"
    (cd $dir && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  fi
done
