#!/usr/bin/env bash
# Trigger benchmarks (services/oxbase/examples/triggers_bench.rs says what
# each figure measures), on the embedded store with events on and a local
# nats-server:
#
# - afterSave deliveries per second to a local webhook (target >= 5,000/s);
# - send-to-webhook latency of afterSave at 1,000 creates/s (p99 < 100 ms);
# - the API's extra latency for a class with a NATS beforeSave handler that
#   answers at once (p99 < 2 ms).
#
#   ops/bench/triggers.sh     (COUNT=20000 RATE=1000 SECONDS_TOTAL=20 BEFORE_COUNT=5000)
#
# The client, the webhook, oxbase and nats-server share this machine's
# cores, so the figures include their contention for CPU.
source "$(dirname "$0")/lib.sh"
COUNT="${COUNT:-20000}"
RATE="${RATE:-1000}"
SECONDS_TOTAL="${SECONDS_TOTAL:-20}"
BEFORE_COUNT="${BEFORE_COUNT:-5000}"
export PATH="$ROOT/.oxbase/tools/bin:$PATH"
command -v nats-server >/dev/null || { echo "nats-server not found: run bash ops/test.sh once" >&2; exit 1; }
NATS_PORT=$((BENCH_PORT + 2))
NATS_URL="nats://127.0.0.1:$NATS_PORT"
TRIGGERS_PID=
start_nats() {
  rm -rf "$BENCH_DIR/nats"
  nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$BENCH_DIR/nats" >"$BENCH_DIR/nats.log" 2>&1 &
  NATS_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && return
    sleep 0.1
  done
}
stop_all() {
  [ -n "$TRIGGERS_PID" ] && kill "$TRIGGERS_PID" 2>/dev/null && wait "$TRIGGERS_PID" 2>/dev/null
  TRIGGERS_PID=
  stop_oxbase
  [ -n "${NATS_PID:-}" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null
  NATS_PID=
  rm -rf "$BENCH_DIR/data" "$BENCH_DIR/nats"
  return 0
}
trap stop_all EXIT
build_oxbase
(cd "$ROOT" && cargo build --release -q -p oxbase --example triggers_bench)
CLIENT=("$ROOT/target/release/examples/triggers_bench" --base "http://127.0.0.1:$BENCH_PORT" --nats "$NATS_URL" \
  --app-id "$APP_ID" --master-key "$MASTER_KEY" --oxbase "$OXBASE")
fresh() {
  stop_all
  start_nats
  start_oxbase OXBASE_EVENTS__ENABLED=true OXBASE_TRIGGERS__ENABLED=true OXBASE_NATS_URL="$NATS_URL"
}
echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, embedded store, nats-server $(nats-server --version | awk '{print $NF}') with file storage"

fresh
"${CLIENT[@]}" --mode throughput --count "$COUNT"

fresh
OXBASE_NATS_URL="$NATS_URL" OXBASE_LOG_LEVEL=warn "$OXBASE" triggers >"$BENCH_DIR/triggers.log" 2>&1 &
TRIGGERS_PID=$!
"${CLIENT[@]}" --mode latency --rate "$RATE" --seconds "$SECONDS_TOTAL"

fresh
"${CLIENT[@]}" --mode before-save --count "$BEFORE_COUNT"
