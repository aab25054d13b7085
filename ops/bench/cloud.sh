#!/usr/bin/env bash
# Cloud function calls per second: oxbase with the oxbase-cloud runner
# (sdks/cloud-js) against Parse Server 9, both running the same Cloud Code
# file (ops/cloud-tests/cloud/main.js), on this machine, one server at a
# time, each on its own fresh PostgreSQL database.
#
# - hello: POST /functions/hello with a small JSON body; the function builds
#   a small object from its params and touches no database. The main figure.
# - busiestProject: one query.first() with the master key (Parse.Query from
#   cloud code back to the server), one seeded Project.
#
# oxbase is measured with one runner process and with two (a queue group:
# each call goes to one of them); Parse Server is one Node process.
#
#   ops/bench/cloud.sh      (DURATION=10s RUNS=3 CONNECTIONS=32; OXBASE_BIN=target/release/oxbase)
#
# The client (wrk), the server(s), the runner(s), nats-server and
# PostgreSQL share the machine's cores.
DURATION="${DURATION:-10s}"
source "$(dirname "$0")/lib.sh"
need wrk
source "$ROOT/ops/postgres.sh" >/dev/null
export PATH="$ROOT/.oxbase/tools/bin:$PATH"
command -v nats-server >/dev/null || { echo "nats-server not found: run bash ops/test.sh once" >&2; exit 1; }
[ -d "$ROOT/ops/cloud-tests/node_modules/parse-server" ] || (cd "$ROOT/ops/cloud-tests" && npm ci --silent --no-audit --no-fund)
[ -d "$ROOT/sdks/cloud-js/node_modules" ] || (cd "$ROOT/sdks/cloud-js" && npm ci --silent --no-audit --no-fund)
build_oxbase

CLOUD="$ROOT/ops/cloud-tests/cloud/main.js"
RUNNER_BIN="$ROOT/sdks/cloud-js/$(node -p "const b=require('$ROOT/sdks/cloud-js/package.json').bin; typeof b === 'string' ? b : b['oxbase-cloud']")"
PARSE_PORT=$((BENCH_PORT + 1))
NATS_PORT=$((BENCH_PORT + 2))
NATS_URL="nats://127.0.0.1:$NATS_PORT"
ADMIN="$OXBASE_TEST_POSTGRES_URI"
SERVER_URI="${ADMIN%/*}"
PARSE_PID=
NATS_PID=
RUNNER_PIDS=()

stop_runners() {
  for pid in "${RUNNER_PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  RUNNER_PIDS=()
  return 0
}
cleanup() {
  stop_runners
  stop_oxbase
  [ -n "$PARSE_PID" ] && kill "$PARSE_PID" 2>/dev/null && wait "$PARSE_PID" 2>/dev/null
  [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null
  for db in bench_cloud_oxbase bench_cloud_parse; do psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null; done
  rm -rf "$BENCH_DIR/data" "$BENCH_DIR/nats" "$BENCH_DIR/files"
  return 0
}
trap cleanup EXIT
for db in bench_cloud_oxbase bench_cloud_parse; do
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null
  psql "$ADMIN" -qc "CREATE DATABASE $db"
done

wait_ready() {
  for _ in $(seq 300); do curl -sf "$1" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "server at $1 did not start" >&2; exit 1
}

# start_runner N: starts runner number N on the cloud file; waits until ready.
start_runner() {
  local log="$BENCH_DIR/runner-$1.log"
  PARSE_SERVER_URL="$BASE" PARSE_APP_ID="$APP_ID" PARSE_MASTER_KEY="$MASTER_KEY" NATS_URL="$NATS_URL" OXBASE_PREFIX=oxbase \
    node "$RUNNER_BIN" "$CLOUD" >"$log" 2>&1 &
  RUNNER_PIDS+=($!)
  for _ in $(seq 300); do
    grep -q 'oxbase-cloud ready' "$log" && return
    sleep 0.1
  done
  echo "runner $1 did not start:" >&2; cat "$log" >&2; exit 1
}

# check BASE: one call of each function, answered as expected.
check() {
  local out
  out=$(curl -sf -X POST -H "X-Parse-Application-Id: $APP_ID" -H 'Content-Type: application/json' -d '{"name":"bench","n":1}' "$1/functions/hello")
  [ "$out" = '{"result":{"greeting":"Hello, bench!","n":1}}' ] || { echo "unexpected hello answer from $1: $out" >&2; exit 1; }
  out=$(curl -sf -X POST -H "X-Parse-Application-Id: $APP_ID" -H 'Content-Type: application/json' -d '{}' "$1/functions/busiestProject")
  [ "$out" = '{"result":{"name":"Bench","todoCount":7}}' ] || { echo "unexpected busiestProject answer from $1: $out" >&2; exit 1; }
}

seed() {
  curl -sf -X POST -H "X-Parse-Application-Id: $APP_ID" -H "X-Parse-Master-Key: $MASTER_KEY" -H 'Content-Type: application/json' \
    -d '{"name":"Bench","todoCount":7}' "$1/classes/Project" >/dev/null
}

measure() {
  local name=$1 base=$2
  export BENCH_FUNCTION=hello; run_wrk "$name hello" "$ROOT/ops/bench/function.lua" "$base"
  export BENCH_FUNCTION=busiestProject; run_wrk "$name busiestProject" "$ROOT/ops/bench/function.lua" "$base"
}

echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD) ($OXBASE) + oxbase-cloud vs Parse Server $(node -p "require('$ROOT/ops/cloud-tests/node_modules/parse-server/package.json').version"), node $(node --version), $(nproc) cores, wrk -t2 -c$CONNECTIONS -d$DURATION, median of $RUNS runs"

# oxbase: the API with the hook registry (triggers on), NATS, the runner(s).
rm -rf "$BENCH_DIR/nats"
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$BENCH_DIR/nats" >"$BENCH_DIR/nats.log" 2>&1 &
NATS_PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break; sleep 0.1; done
start_oxbase OXBASE_EVENTS__ENABLED=true OXBASE_TRIGGERS__ENABLED=true OXBASE_NATS_URL="$NATS_URL" OXBASE_DATABASE_URI="$SERVER_URI/bench_cloud_oxbase"
seed "$BASE"
start_runner 1
check "$BASE"
measure "oxbase+1runner" "$BASE"
start_runner 2
check "$BASE"
measure "oxbase+2runners" "$BASE"
stop_runners
stop_oxbase

(cd "$BENCH_DIR" && exec node "$ROOT/ops/cloud-tests/tests/parse-server.mjs" "$PARSE_PORT" "$SERVER_URI/bench_cloud_parse" "$CLOUD" "$APP_ID" "$MASTER_KEY" >"$BENCH_DIR/parse.log" 2>&1) &
PARSE_PID=$!
wait_ready "http://127.0.0.1:$PARSE_PORT/parse/health"
seed "http://127.0.0.1:$PARSE_PORT/parse"
check "http://127.0.0.1:$PARSE_PORT/parse"
measure parse "http://127.0.0.1:$PARSE_PORT/parse"

echo
printf '%-16s %14s %16s %14s %10s %10s\n' function oxbase+1runner oxbase+2runners parse ratio1 ratio2
for fn in hello busiestProject; do
  o1=$(grep "^oxbase+1runner $fn=" "$BENCH_DIR/medians.txt" | cut -d= -f2)
  o2=$(grep "^oxbase+2runners $fn=" "$BENCH_DIR/medians.txt" | cut -d= -f2)
  ps=$(grep "^parse $fn=" "$BENCH_DIR/medians.txt" | cut -d= -f2)
  printf '%-16s %14s %16s %14s %9.2fx %9.2fx\n' "$fn" "$o1" "$o2" "$ps" "$(echo "$o1 / $ps" | bc -l)" "$(echo "$o2 / $ps" | bc -l)"
done
echo "(ratio = oxbase req/s / Parse Server req/s, with 1 and 2 runner processes)"
