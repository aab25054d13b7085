#!/usr/bin/env bash
# Cron benchmark (services/oxbase/examples/cron_bench.rs says what each
# figure measures): SCHEDULES schedules firing every minute, CRONS `oxbase
# cron` processes sharing them, on a local nats-server with file storage;
# how long after its scheduled second each job is enqueued (target: p99
# under 1 s), and the cron processes' CPU, over the ticks and idle.
#
#   ops/bench/cron.sh     (SCHEDULES=10000 MINUTES=2 CRONS=1)
#
# No jobs process runs: the jobs stay queued, so the figures are cron's.
source "$(dirname "$0")/lib.sh"
SCHEDULES="${SCHEDULES:-10000}"
MINUTES="${MINUTES:-2}"
CRONS="${CRONS:-1}"
export PATH="$ROOT/.oxbase/tools/bin:$PATH"
command -v nats-server >/dev/null || { echo "nats-server not found: run bash ops/test.sh once" >&2; exit 1; }
NATS_PORT=$((BENCH_PORT + 2))
NATS_URL="nats://127.0.0.1:$NATS_PORT"
PIDS=()
stop_all() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
  PIDS=()
  rm -rf "$BENCH_DIR"
  return 0
}
trap stop_all EXIT
build_oxbase
(cd "$ROOT" && cargo build --release -q -p oxbase --example cron_bench)
mkdir -p "$BENCH_DIR"
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$BENCH_DIR/nats" >"$BENCH_DIR/nats.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
  sleep 0.1
done
CRON_PIDS=()
for i in $(seq "$CRONS"); do
  port=$((BENCH_PORT + 10 + i))
  env OXBASE_NATS_URL="$NATS_URL" OXBASE_DATA_DIR="$BENCH_DIR/data" OXBASE_HOST=127.0.0.1 OXBASE_LOG_LEVEL=warn \
    OXBASE_APP_ID="$APP_ID" OXBASE_MASTER_KEY="$MASTER_KEY" \
    "$OXBASE" cron --port "$port" >"$BENCH_DIR/cron-$i.log" 2>&1 &
  PIDS+=($!)
  CRON_PIDS+=($!)
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
done
echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, $CRONS oxbase cron, nats-server $(nats-server --version | awk '{print $NF}') with file storage"
"$ROOT/target/release/examples/cron_bench" --nats "$NATS_URL" --schedules "$SCHEDULES" --minutes "$MINUTES" \
  --cron-pids "$(IFS=,; echo "${CRON_PIDS[*]}")"
for i in $(seq "$CRONS"); do
  if grep -qiE 'error|panic' "$BENCH_DIR/cron-$i.log"; then
    echo "  oxbase cron $i logged $(grep -ciE 'error|panic' "$BENCH_DIR/cron-$i.log") lines with errors, such as:"
    grep -iE 'error|panic' "$BENCH_DIR/cron-$i.log" | head -3
  fi
done
