#!/usr/bin/env bash
# Jobs benchmarks (services/oxbase/examples/jobs_bench.rs says what each
# figure measures), with `oxbase jobs` alone on a local nats-server with
# file storage, and a no-op Rust worker in the client:
#
# - end-to-end throughput of no-op jobs: submitted over NATS in batches of
#   1000, run by the worker, recorded as succeeded (target >= 20,000/s);
# - submit latency, one job per NATS request at RATE per second;
# - resident memory of nats-server and `oxbase jobs`, and the JetStream
#   storage, with DELAYED jobs waiting (due in an hour);
# - with MODES=kv-puts (not by default), a yardstick for nats-server alone:
#   key-value compare-and-set writes per second, IN_FLIGHT writers at once.
#
#   ops/bench/jobs.sh     (COUNT=100000 LATENCY_COUNT=5000 RATE=1000 DELAYED=1000000
#                          CONCURRENCY=1024 BATCH=1000 IN_FLIGHT=16 KEEP_SUCCEEDED=true
#                          MODES="throughput latency delayed")
#
# CONCURRENCY sets both jobs.concurrency and the default queue's;
# KEEP_SUCCEEDED=false has the default queue forget succeeded jobs. The
# client, the worker, `oxbase jobs` and nats-server share this machine's
# cores, so the figures include their contention for CPU. Each mode gets a fresh nats-server and jobs process.
source "$(dirname "$0")/lib.sh"
COUNT="${COUNT:-100000}"
LATENCY_COUNT="${LATENCY_COUNT:-5000}"
RATE="${RATE:-1000}"
DELAYED="${DELAYED:-1000000}"
CONCURRENCY="${CONCURRENCY:-1024}"
IN_FLIGHT="${IN_FLIGHT:-16}"
BATCH="${BATCH:-1000}"
KEEP_SUCCEEDED="${KEEP_SUCCEEDED:-true}"
MODES="${MODES:-throughput latency delayed}"
export PATH="$ROOT/.oxbase/tools/bin:$PATH"
command -v nats-server >/dev/null || { echo "nats-server not found: run bash ops/test.sh once" >&2; exit 1; }
NATS_PORT=$((BENCH_PORT + 2))
NATS_URL="nats://127.0.0.1:$NATS_PORT"
NATS_MONITOR_PORT=$((BENCH_PORT + 3))
JOBS_PID=
NATS_PID=
start_nats() {
  rm -rf "$BENCH_DIR/nats"
  nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$BENCH_DIR/nats" -m "$NATS_MONITOR_PORT" >"$BENCH_DIR/nats.log" 2>&1 &
  NATS_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && return
    sleep 0.1
  done
  echo "nats-server did not start:" >&2; cat "$BENCH_DIR/nats.log" >&2; exit 1
}
# `oxbase jobs`, with /health, /ready and /metrics on BENCH_PORT.
start_jobs() {
  env OXBASE_NATS_URL="$NATS_URL" OXBASE_DATA_DIR="$BENCH_DIR/data" OXBASE_HOST=127.0.0.1 OXBASE_LOG_LEVEL=warn \
    OXBASE_APP_ID="$APP_ID" OXBASE_MASTER_KEY="$MASTER_KEY" \
    OXBASE_JOBS__CONCURRENCY="$CONCURRENCY" OXBASE_JOBS__QUEUES__DEFAULT__CONCURRENCY="$CONCURRENCY" \
    OXBASE_JOBS__QUEUES__DEFAULT__KEEP_SUCCEEDED="$KEEP_SUCCEEDED" \
    "$OXBASE" jobs --port "$BENCH_PORT" >"$BENCH_DIR/jobs.log" 2>&1 &
  JOBS_PID=$!
  for _ in $(seq 300); do
    curl -sf "http://127.0.0.1:$BENCH_PORT/ready" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "oxbase jobs did not start:" >&2; cat "$BENCH_DIR/jobs.log" >&2; exit 1
}
stop_all() {
  [ -n "$JOBS_PID" ] && kill "$JOBS_PID" 2>/dev/null && wait "$JOBS_PID" 2>/dev/null
  JOBS_PID=
  [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null
  NATS_PID=
  rm -rf "$BENCH_DIR/data" "$BENCH_DIR/nats"
  return 0
}
trap stop_all EXIT
build_oxbase
(cd "$ROOT" && cargo build --release -q -p oxbase --example jobs_bench)
fresh() {
  stop_all
  start_nats
  start_jobs
}
client() {
  "$ROOT/target/release/examples/jobs_bench" --nats "$NATS_URL" --jobs "http://127.0.0.1:$BENCH_PORT" \
    --nats-monitor "http://127.0.0.1:$NATS_MONITOR_PORT" \
    --nats-pid "$NATS_PID" --jobs-pid "$JOBS_PID" --in-flight "$IN_FLIGHT" --batch "$BATCH" "$@"
}
echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, oxbase jobs with concurrency $CONCURRENCY (default queue $CONCURRENCY, keep_succeeded $KEEP_SUCCEEDED), nats-server $(nats-server --version | awk '{print $NF}') with file storage"

for mode in $MODES; do
  fresh
  case "$mode" in
    throughput) client --mode throughput --count "$COUNT" ;;
    latency) client --mode latency --count "$LATENCY_COUNT" --rate "$RATE" ;;
    delayed) client --mode delayed --count "$DELAYED" --nats-dir "$BENCH_DIR/nats" ;;
    kv-puts) client --mode kv-puts --count "$COUNT" ;;
    *) echo "unknown mode $mode" >&2; exit 1 ;;
  esac
  if grep -qiE 'error|panic' "$BENCH_DIR/jobs.log"; then
    echo "  oxbase jobs logged $(grep -ciE 'error|panic' "$BENCH_DIR/jobs.log") lines with errors, such as:"
    grep -iE 'error|panic' "$BENCH_DIR/jobs.log" | head -3
  fi
done
