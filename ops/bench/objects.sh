#!/usr/bin/env bash
# Object API throughput on the embedded store: GET by id, a query on an
# indexed field returning 10 objects, and creates. wrk, 32 connections.
#
#   ops/bench/objects.sh            (DURATION=15s CONNECTIONS=32 by default)
source "$(dirname "$0")/lib.sh"
need wrk
trap stop_oxbase EXIT
build_oxbase
start_oxbase
COUNT=10000
python3 "$ROOT/ops/bench/seed.py" "$BASE" "$APP_ID" "$COUNT" "$BENCH_DIR/ids.txt"
# One query first, so the field's index exists before timing.
curl -sf -H "X-Parse-Application-Id: $APP_ID" -G --data-urlencode 'where={"group":7}' "$BASE/classes/Bench" \
  | python3 -c 'import json,sys; n=len(json.load(sys.stdin)["results"]); assert n == 10, n'
sleep 1
export BENCH_IDS="$BENCH_DIR/ids.txt" BENCH_GROUPS=$((COUNT / 10))
echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, wrk -t2 -c$CONNECTIONS -d$DURATION, $RUNS runs each"
run_wrk "GET by id" "$ROOT/ops/bench/get.lua" "$BASE"
run_wrk "query, indexed, 10 results" "$ROOT/ops/bench/query.lua" "$BASE"
run_wrk "create" "$ROOT/ops/bench/create.lua" "$BASE"
