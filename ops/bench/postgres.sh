#!/usr/bin/env bash
# oxbase against Parse Server 9 on one PostgreSQL server, each on its own
# database with the same data and indexes: GET by id, a query on an indexed
# field returning 10 objects, creates and updates, with wrk (32 connections),
# one server at a time. Prints each figure and the ratio oxbase / Parse.
#
#   ops/bench/postgres.sh            (DURATION=15s RUNS=3 CONNECTIONS=32)
source "$(dirname "$0")/lib.sh"
need wrk
source "$ROOT/ops/postgres.sh"
(cd "$ROOT/ops/interop" && npm ci --silent --no-audit --no-fund)
build_oxbase
PARSE_PORT=$((BENCH_PORT + 1))
ADMIN="$OXBASE_TEST_POSTGRES_URI"
SERVER_URI="${ADMIN%/*}"
COUNT=10000
export BENCH_GROUPS=$((COUNT / 10))
PARSE_PID=

cleanup() {
  stop_oxbase
  [ -n "$PARSE_PID" ] && kill "$PARSE_PID" 2>/dev/null && wait "$PARSE_PID" 2>/dev/null
  for db in bench_oxbase bench_parse; do psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null; done
}
trap cleanup EXIT
for db in bench_oxbase bench_parse; do
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -qc "CREATE DATABASE $db"
done

wait_ready() {
  for _ in $(seq 200); do curl -sf "$1" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "server at $1 did not start" >&2; exit 1
}

# measure NAME URL: seeds, indexes `group`, and runs every scenario.
measure() {
  local name=$1 base=$2 db=$3
  python3 "$ROOT/ops/bench/seed.py" "$base" "$APP_ID" "$COUNT" "$BENCH_DIR/ids-$name.txt"
  psql "$SERVER_URI/$db" -qc 'CREATE INDEX IF NOT EXISTS bench_group ON "Bench" ("group")' -qc 'ANALYZE'
  export BENCH_IDS="$BENCH_DIR/ids-$name.txt"
  for scenario in get query create update; do
    run_wrk "$name $scenario" "$ROOT/ops/bench/$scenario.lua" "$base"
  done
}

echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD) vs Parse Server $(node -p "require('$ROOT/ops/interop/node_modules/parse-server/package.json').version"), $(nproc) cores, wrk -t2 -c$CONNECTIONS -d$DURATION, median of $RUNS runs"

start_oxbase OXBASE_DATABASE_URI="$SERVER_URI/bench_oxbase"
measure oxbase "$BASE" bench_oxbase
stop_oxbase

(cd "$BENCH_DIR" && exec node "$ROOT/ops/bench/parse-server.mjs" "$PARSE_PORT" "$SERVER_URI/bench_parse" >"$BENCH_DIR/parse.log" 2>&1) &
PARSE_PID=$!
wait_ready "http://127.0.0.1:$PARSE_PORT/parse/health"
measure parse "http://127.0.0.1:$PARSE_PORT/parse" bench_parse

echo
printf '%-8s %14s %14s %8s\n' request oxbase parse ratio
for scenario in get query create update; do
  ox=$(grep "^oxbase $scenario=" "$BENCH_DIR/medians.txt" | cut -d= -f2)
  ps=$(grep "^parse $scenario=" "$BENCH_DIR/medians.txt" | cut -d= -f2)
  printf '%-8s %14s %14s %8.1fx\n' "$scenario" "$ox" "$ps" "$(echo "$ox / $ps" | bc -l)"
done
