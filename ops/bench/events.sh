#!/usr/bin/env bash
# What the event backbone costs: creates per second on the embedded store
# with the outbox and relay on (publishing to a local nats-server), against
# the same build with events off. The two modes alternate, each run on a
# fresh data directory after a short warm-up, so drift on a noisy machine
# hits both alike; prints each pair's ratio and the ratio of the medians.
#
#   ops/bench/events.sh             (DURATION=15s CONNECTIONS=32 RUNS=3)
#   STORE=postgres ops/bench/events.sh   the same on PostgreSQL (ops/postgres.sh)
source "$(dirname "$0")/lib.sh"
need wrk
STORE="${STORE:-sqlite}"
DB_ENV=()
if [ "$STORE" = postgres ]; then
  source "$ROOT/ops/postgres.sh"
  ADMIN="$OXBASE_TEST_POSTGRES_URI"
  DB_ENV=(OXBASE_DATABASE_URI="${ADMIN%/*}/bench_events")
fi
fresh_store() {
  rm -rf "$BENCH_DIR/data"
  if [ "$STORE" = postgres ]; then
    psql "$ADMIN" -qc "DROP DATABASE IF EXISTS bench_events WITH (FORCE)" -qc "CREATE DATABASE bench_events" 2>/dev/null
  fi
}
export PATH="$ROOT/.oxbase/tools/bin:$PATH"
command -v nats-server >/dev/null || { echo "nats-server not found: run bash ops/test.sh once" >&2; exit 1; }
NATS_PORT=$((BENCH_PORT + 2))
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$BENCH_DIR/nats" >"$BENCH_DIR/nats.log" 2>&1 &
NATS_PID=$!
cleanup() {
  stop_oxbase
  kill "$NATS_PID" 2>/dev/null
  if [ "$STORE" = postgres ]; then psql "$ADMIN" -qc "DROP DATABASE IF EXISTS bench_events WITH (FORCE)" 2>/dev/null; fi
}
trap cleanup EXIT
build_oxbase
echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD), $STORE, $(nproc) cores, wrk -t2 -c$CONNECTIONS -d$DURATION, $RUNS runs each, alternating"
on=() off=()
for i in $(seq "$RUNS"); do
  for events in true false; do
    fresh_store
    start_oxbase "${DB_ENV[@]}" OXBASE_EVENTS__ENABLED=$events OXBASE_NATS_URL="nats://127.0.0.1:$NATS_PORT"
    wrk -t2 -c"$CONNECTIONS" -d2s -s "$ROOT/ops/bench/create.lua" "$BASE" >/dev/null
    rps=$(wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -s "$ROOT/ops/bench/create.lua" "$BASE" | awk '/Requests\/sec/ {print $2}')
    stop_oxbase
    if [ "$events" = true ]; then on+=("$rps"); else off+=("$rps"); fi
    printf 'run %d  events %-5s  %10s creates/s\n' "$i" "$events" "$rps"
  done
done
python3 - "${on[*]}" "${off[*]}" <<'PY'
import statistics, sys
on = [float(x) for x in sys.argv[1].split()]
off = [float(x) for x in sys.argv[2].split()]
print("pair ratios on/off:", " ".join(f"{a / b:.2f}" for a, b in zip(on, off)))
print(f"create: events on {statistics.median(on):.0f}/s, off {statistics.median(off):.0f}/s, "
      f"on / off = {statistics.median(on) / statistics.median(off):.2f}")
PY
