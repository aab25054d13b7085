# Shared helpers for the benchmarks: build, start and stop oxbase, run wrk.
# Source it; it expects BENCH_PORT and BENCH_DIR to be set or uses defaults.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_PORT="${BENCH_PORT:-18337}"
BENCH_DIR="${BENCH_DIR:-$(mktemp -d)}"
APP_ID=bench
MASTER_KEY=bench-master
BASE="http://127.0.0.1:$BENCH_PORT/parse"
DURATION="${DURATION:-15s}"
CONNECTIONS="${CONNECTIONS:-32}"

need() {
  command -v "$1" >/dev/null 2>&1 && return
  echo "installing $1" >&2
  (apt-get update -qq && apt-get install -y -qq "$1") >/dev/null
}

# OXBASE_BIN benchmarks a binary built elsewhere (an earlier commit, for a
# before/after comparison in one session) instead of this checkout's.
build_oxbase() {
  if [ -n "${OXBASE_BIN:-}" ]; then
    OXBASE="$OXBASE_BIN"
    return
  fi
  (cd "$ROOT" && cargo build --release -q -p oxbase)
  OXBASE="$ROOT/target/release/oxbase"
}

# start_oxbase [extra env assignments...]: starts `oxbase api` on BENCH_PORT.
# Events and hooks are off unless the assignments turn them on (with a NATS
# to reach).
start_oxbase() {
  env OXBASE_EVENTS__ENABLED=false OXBASE_TRIGGERS__ENABLED=false OXBASE_JOBS__ENABLED=false OXBASE_PUSH__ENABLED=false "$@" OXBASE_HOST=127.0.0.1 OXBASE_LOG_LEVEL=warn OXBASE_ALLOW_CLIENT_CLASS_CREATION=true \
    "$OXBASE" api --port "$BENCH_PORT" --data-dir "$BENCH_DIR/data" \
    --app-id "$APP_ID" --master-key "$MASTER_KEY" >"$BENCH_DIR/oxbase.log" 2>&1 &
  OXBASE_PID=$!
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$BENCH_PORT/ready" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "oxbase did not start:" >&2; cat "$BENCH_DIR/oxbase.log" >&2; exit 1
}

stop_oxbase() {
  [ -n "${OXBASE_PID:-}" ] && kill "$OXBASE_PID" 2>/dev/null && wait "$OXBASE_PID" 2>/dev/null || true
  OXBASE_PID=
}

# run_wrk NAME SCRIPT URL: runs wrk RUNS times (default 3) and prints the
# median throughput with every run's figure, since these machines are noisy.
RUNS="${RUNS:-3}"
run_wrk() {
  local name=$1 script=$2 url=$3 figures=() p99s=() errors=0
  for i in $(seq "$RUNS"); do
    local out="$BENCH_DIR/wrk-${name// /_}-$i.txt"
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$script" "$url" >"$out"
    figures+=("$(awk '/Requests\/sec/ {print $2}' "$out")")
    p99s+=("$(awk '/ 99%/ {print $2}' "$out")")
    errors=$((errors + $(awk '/Non-2xx or 3xx responses/ {print $5}' "$out" | grep . || echo 0)))
  done
  local median
  median=$(printf '%s\n' "${figures[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  printf '%-28s median %10s req/s   runs: %s   p99: %s   non-2xx: %s\n' \
    "$name" "$median" "${figures[*]}" "${p99s[*]}" "$errors"
  echo "$name=$median" >>"$BENCH_DIR/medians.txt"
}
