#!/usr/bin/env bash
# The fault campaign (issue 21): every scenario, or the ones named, each
# under a steady REST load; prints one table row per scenario, then the
# details. See README.md.
#
#   bash ops/faults/run.sh                      # every scenario, about 20 minutes
#   bash ops/faults/run.sh api-kill disk-full   # some of them
#
# Needs root (tmpfs mounts, a private PostgreSQL run as the postgres user),
# Node.js 20 with npm, nats-server, PostgreSQL's binaries, and an oxbase
# binary: OXBASE_BIN, by default this checkout's target/release or
# target/debug build.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

if [ -z "${OXBASE_BIN:-}" ]; then
  for candidate in "$root/target/release/oxbase" "$root/target/debug/oxbase"; do
    if [ -x "$candidate" ]; then OXBASE_BIN=$candidate; break; fi
  done
fi
if [ ! -x "${OXBASE_BIN:-}" ]; then
  echo "no oxbase binary: build one (cargo build -p oxbase) or set OXBASE_BIN" >&2
  exit 1
fi
NATS_SERVER=${NATS_SERVER:-$(command -v nats-server || echo "$root/.oxbase/tools/bin/nats-server")}
if [ ! -x "$NATS_SERVER" ]; then
  echo "no nats-server: put one on PATH (oxbase dev installs one into .oxbase/tools) or set NATS_SERVER" >&2
  exit 1
fi
if [ ! -d "$here/node_modules/nats" ] || [ ! -d "$here/node_modules/ws" ]; then
  (cd "$here" && npm ci --silent --no-audit --no-fund)
fi

FAULTS_OUT=${FAULTS_OUT:-$here/out/$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$FAULTS_OUT"
export OXBASE_BIN NATS_SERVER FAULTS_OUT

# The campaign kills every process it started when it exits; this makes
# sure it exits when this script does.
node_pid=
cleanup() {
  if [ -n "$node_pid" ] && kill -0 "$node_pid" 2>/dev/null; then
    kill -TERM "$node_pid" 2>/dev/null || true
    wait "$node_pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT

echo "binary: $OXBASE_BIN ($("$OXBASE_BIN" --version))" >&2
echo "output: $FAULTS_OUT" >&2
nice -n "${NICE:-5}" node "$here/campaign.mjs" "$@" >"$FAULTS_OUT/report.md" &
node_pid=$!
wait "$node_pid"
status=$?
node_pid=
cat "$FAULTS_OUT/report.md"
exit "$status"
