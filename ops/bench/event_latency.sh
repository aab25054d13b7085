#!/usr/bin/env bash
# Write-to-event latency: creates at a fixed open-loop rate (1,000/s) on the
# embedded store with events on, and how long each one's CloudEvent takes to
# reach a subscriber, p50/p90/p99/max. Target: p99 under 50 ms.
#
# The measuring client is services/oxbase/examples/event_latency.rs (its
# header says what each figure brackets). By default the subscriber is a
# core NATS subscription on oxbase.events.Bench.created; SUBSCRIBER=ordered
# uses an ordered JetStream consumer on OXBASE_EVENTS instead.
#
#   ops/bench/event_latency.sh          (RATE=1000 SECONDS_TOTAL=20 WARMUP=2 SUBSCRIBER=core)
#
# The client, oxbase and nats-server share this machine's cores, so the
# figures include their contention for CPU.
source "$(dirname "$0")/lib.sh"
RATE="${RATE:-1000}"
SECONDS_TOTAL="${SECONDS_TOTAL:-20}"
WARMUP="${WARMUP:-2}"
SUBSCRIBER="${SUBSCRIBER:-core}"
export PATH="$ROOT/.oxbase/tools/bin:$PATH"
command -v nats-server >/dev/null || { echo "nats-server not found: run bash ops/test.sh once" >&2; exit 1; }
NATS_PORT=$((BENCH_PORT + 2))
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$BENCH_DIR/nats" >"$BENCH_DIR/nats.log" 2>&1 &
NATS_PID=$!
trap 'stop_oxbase; kill $NATS_PID 2>/dev/null; wait $NATS_PID 2>/dev/null; rm -rf "$BENCH_DIR/data" "$BENCH_DIR/nats"' EXIT
build_oxbase
(cd "$ROOT" && cargo build --release -q -p oxbase --example event_latency)
CLIENT="$ROOT/target/release/examples/event_latency"
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
  sleep 0.1
done
rm -rf "$BENCH_DIR/data"
start_oxbase OXBASE_EVENTS__ENABLED=true OXBASE_NATS_URL="nats://127.0.0.1:$NATS_PORT"
echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, embedded store, nats-server $(nats-server --version | awk '{print $NF}') with file storage"
status=0
"$CLIENT" --base "http://127.0.0.1:$BENCH_PORT" --nats "nats://127.0.0.1:$NATS_PORT" \
  --app-id "$APP_ID" --class Bench --rate "$RATE" --seconds "$SECONDS_TOTAL" --warmup "$WARMUP" \
  --subscriber "$SUBSCRIBER" || status=$?
exit "$status"
