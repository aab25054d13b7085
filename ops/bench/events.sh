#!/usr/bin/env bash
# What the event backbone costs: creates per second on the embedded store
# with the outbox and relay on (publishing to a local nats-server), against
# the same build with events off. Prints the ratio on / off.
#
#   ops/bench/events.sh             (DURATION=15s CONNECTIONS=32 RUNS=3)
source "$(dirname "$0")/lib.sh"
need wrk
export PATH="$ROOT/.oxbase/tools/bin:$PATH"
command -v nats-server >/dev/null || { echo "nats-server not found: run bash ops/test.sh once" >&2; exit 1; }
NATS_PORT=$((BENCH_PORT + 2))
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$BENCH_DIR/nats" >"$BENCH_DIR/nats.log" 2>&1 &
NATS_PID=$!
trap 'stop_oxbase; kill $NATS_PID 2>/dev/null' EXIT
build_oxbase
echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, wrk -t2 -c$CONNECTIONS -d$DURATION, $RUNS runs each"
for events in true false; do
  rm -rf "$BENCH_DIR/data"
  start_oxbase OXBASE_EVENTS__ENABLED=$events OXBASE_NATS_URL="nats://127.0.0.1:$NATS_PORT"
  run_wrk "create, events $events" "$ROOT/ops/bench/create.lua" "$BASE"
  curl -s "http://127.0.0.1:$BENCH_PORT/metrics" | grep backlog || true
  stop_oxbase
done
python3 - "$BENCH_DIR/medians.txt" <<'PY'
import sys
m = dict(line.strip().split("=", 1) for line in open(sys.argv[1]))
print(f"create: events on / off = {float(m['create, events true']) / float(m['create, events false']):.2f}")
PY
