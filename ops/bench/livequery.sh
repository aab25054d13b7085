#!/usr/bin/env bash
# LiveQuery fan-out: oxbase against Parse Server 9, in one run, one server
# at a time, each on its own fresh PostgreSQL database.
#
# SUBSCRIBERS WebSocket clients speak Parse's LiveQuery protocol, client i
# subscribed to Message where room = "r<i % ROOMS>"; a writer then creates
# Message objects through REST at RATE/s (WARMUP s, then DURATION s
# measured), each on a random room, so every write is one `create` event
# for SUBSCRIBERS/ROOMS clients. The load generator is livequery-load.mjs
# (its header says what each figure measures): event-to-client latency
# (receive time - the write's send time), events delivered against those
# expected, the writer's achieved rate, and the server's RSS growth per
# connection.
#
# - oxbase: `oxbase all` on PostgreSQL with events on, a fresh nats-server
#   (JetStream), LiveQuery on the API's port at /parse.
# - oxbase-livequery: `oxbase api` with events on, and `oxbase livequery`
#   as its own process serving the WebSockets; its RSS and CPU are the
#   livequery process's.
# - parse: Parse Server 9 (parse-server.mjs ... Message) with
#   startLiveQueryServer on its HTTP server, in-process pub/sub.
#
#   ops/bench/livequery.sh   (SUBSCRIBERS=10000 ROOMS=1000 RATE=1000 DURATION=30 WARMUP=5
#                             CONCURRENCY=64 BATCH=500 SERVERS="oxbase oxbase-livequery parse";
#                             OXBASE_BIN=...)
#   SUBSCRIBERS=2000 DURATION=10 ops/bench/livequery.sh      a short run
#
# The load generator, the server, PostgreSQL and nats-server share this
# machine's cores, so every figure includes their contention for CPU.
DURATION="${DURATION:-30}"
source "$(dirname "$0")/lib.sh"
mkdir -p "$BENCH_DIR"
DURATION="${DURATION%s}"
SUBSCRIBERS="${SUBSCRIBERS:-10000}"
ROOMS="${ROOMS:-1000}"
RATE="${RATE:-1000}"
WARMUP="${WARMUP:-5}"
CONCURRENCY="${CONCURRENCY:-64}"
BATCH="${BATCH:-500}"
DRAIN="${DRAIN:-15}"
SERVERS="${SERVERS:-oxbase oxbase-livequery parse}"
# Each side of every subscription holds a socket: the load generator and
# the server need SUBSCRIBERS descriptors and then some.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((SUBSCRIBERS + 1000)) ]; then
  echo "open file limit $(ulimit -n) is too low for $SUBSCRIBERS subscribers" >&2; exit 1
fi
source "$ROOT/ops/postgres.sh" >/dev/null
export PATH="$ROOT/.oxbase/tools/bin:$PATH"
[ -d "$ROOT/ops/interop/node_modules/parse-server" ] || (cd "$ROOT/ops/interop" && npm ci --silent --no-audit --no-fund)
case " $SERVERS " in
  *" oxbase"*)
    command -v nats-server >/dev/null || { echo "nats-server not found: run bash ops/test.sh once" >&2; exit 1; }
    build_oxbase ;;
esac

PARSE_PORT=$((BENCH_PORT + 1))
NATS_PORT=$((BENCH_PORT + 2))
LQ_PORT=$((BENCH_PORT + 3))
NATS_URL="nats://127.0.0.1:$NATS_PORT"
ADMIN="$OXBASE_TEST_POSTGRES_URI"
SERVER_URI="${ADMIN%/*}"
RESULT="$BENCH_DIR/livequery-results.jsonl"
CLK_TCK="$(getconf CLK_TCK)"
DATABASES=(bench_lq_oxbase bench_lq_oxbase_livequery bench_lq_parse)
PARSE_PID=
NATS_PID=
LQ_PID=

stop_pid() {
  [ -n "$1" ] && kill "$1" 2>/dev/null && wait "$1" 2>/dev/null
  return 0
}
stop_all() {
  stop_pid "$LQ_PID"; LQ_PID=
  stop_oxbase
  stop_pid "$PARSE_PID"; PARSE_PID=
  stop_pid "$NATS_PID"; NATS_PID=
  rm -rf "$BENCH_DIR/data" "$BENCH_DIR/nats"
}
cleanup() {
  stop_all
  for db in "${DATABASES[@]}"; do psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" 2>/dev/null; done
  return 0
}
trap cleanup EXIT

fresh_db() {
  psql "$ADMIN" -qc "DROP DATABASE IF EXISTS $1 WITH (FORCE)" 2>/dev/null
  psql "$ADMIN" -qc "CREATE DATABASE $1"
}

wait_ready() {
  for _ in $(seq 300); do curl -sf "$1" >/dev/null 2>&1 && return; sleep 0.1; done
  echo "server at $1 did not start:" >&2; cat "$2" >&2; exit 1
}

start_nats() {
  rm -rf "$BENCH_DIR/nats"
  nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$BENCH_DIR/nats" >"$BENCH_DIR/nats.log" 2>&1 &
  NATS_PID=$!
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && return; sleep 0.1; done
  echo "nats-server did not start:" >&2; cat "$BENCH_DIR/nats.log" >&2; exit 1
}

# oxbase_env DATABASE: sets OXBASE_ENV, the environment every oxbase
# process here shares; the background services LiveQuery does not need
# are off.
oxbase_env() {
  OXBASE_ENV=(OXBASE_DATABASE_URI="$SERVER_URI/$1" OXBASE_NATS_URL="$NATS_URL" OXBASE_EVENTS__ENABLED=true
    OXBASE_TRIGGERS__ENABLED=false OXBASE_JOBS__ENABLED=false OXBASE_CRON__ENABLED=false OXBASE_PUSH__ENABLED=false
    OXBASE_HOST=127.0.0.1 OXBASE_LOG_LEVEL=warn OXBASE_ALLOW_CLIENT_CLASS_CREATION=true
    OXBASE_APP_ID="$APP_ID" OXBASE_MASTER_KEY="$MASTER_KEY" OXBASE_DATA_DIR="$BENCH_DIR/data")
}

# start_oxbase_cmd COMMAND DATABASE [extra env...]: `oxbase COMMAND` on
# BENCH_PORT (sets OXBASE_PID, as lib.sh's start_oxbase does).
start_oxbase_cmd() {
  local command=$1 db=$2
  shift 2
  oxbase_env "$db"
  env "${OXBASE_ENV[@]}" "$@" "$OXBASE" "$command" --port "$BENCH_PORT" >"$BENCH_DIR/oxbase.log" 2>&1 &
  OXBASE_PID=$!
  wait_ready "http://127.0.0.1:$BENCH_PORT/ready" "$BENCH_DIR/oxbase.log"
}

# seed BASE: one Message, so the class and its fields exist before anyone
# subscribes.
seed() {
  curl -sf -X POST -H "X-Parse-Application-Id: $APP_ID" -H 'Content-Type: application/json' \
    -d '{"room":"seed","sentAt":0}' "$1/classes/Message" >/dev/null
}

# load LABEL WS_URL BASE SERVER_PID [OTHER_PIDS]
load() {
  LABEL="$1" LQ_URL="$2" BASE="$3" SERVER_PID="$4" OTHER_PIDS="${5:-}" APP_ID="$APP_ID" \
    SUBSCRIBERS="$SUBSCRIBERS" ROOMS="$ROOMS" RATE="$RATE" DURATION="$DURATION" WARMUP="$WARMUP" \
    CONCURRENCY="$CONCURRENCY" BATCH="$BATCH" DRAIN="$DRAIN" CLK_TCK="$CLK_TCK" RESULT="$RESULT" \
    node "$ROOT/ops/bench/livequery-load.mjs"
}

run_oxbase() {
  fresh_db bench_lq_oxbase
  start_nats
  start_oxbase_cmd all bench_lq_oxbase
  seed "$BASE"
  load oxbase "ws://127.0.0.1:$BENCH_PORT/parse" "$BASE" "$OXBASE_PID" "$NATS_PID"
  stop_all
}

run_oxbase_livequery() {
  fresh_db bench_lq_oxbase_livequery
  start_nats
  start_oxbase_cmd api bench_lq_oxbase_livequery OXBASE_LIVEQUERY__ENABLED=false
  oxbase_env bench_lq_oxbase_livequery
  env "${OXBASE_ENV[@]}" "$OXBASE" livequery --port "$LQ_PORT" >"$BENCH_DIR/livequery.log" 2>&1 &
  LQ_PID=$!
  wait_ready "http://127.0.0.1:$LQ_PORT/ready" "$BENCH_DIR/livequery.log"
  seed "$BASE"
  load oxbase-livequery "ws://127.0.0.1:$LQ_PORT/" "$BASE" "$LQ_PID" "$OXBASE_PID,$NATS_PID"
  stop_all
}

run_parse() {
  fresh_db bench_lq_parse
  (cd "$BENCH_DIR" && exec node "$ROOT/ops/bench/parse-server.mjs" "$PARSE_PORT" "$SERVER_URI/bench_lq_parse" Message >"$BENCH_DIR/parse.log" 2>&1) &
  PARSE_PID=$!
  wait_ready "http://127.0.0.1:$PARSE_PORT/parse/health" "$BENCH_DIR/parse.log"
  seed "http://127.0.0.1:$PARSE_PORT/parse"
  load parse "ws://127.0.0.1:$PARSE_PORT/parse" "http://127.0.0.1:$PARSE_PORT/parse" "$PARSE_PID"
  stop_all
}

version=$(node -p "require('$ROOT/ops/interop/node_modules/parse-server/package.json').version")
echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD) (${OXBASE:-not built}) vs Parse Server $version, node $(node --version), $(nproc) cores"
echo "$SUBSCRIBERS subscribers on $ROOMS rooms, $RATE writes/s (up to $CONCURRENCY in flight), ${WARMUP} s warm-up + ${DURATION} s measured"
echo "the load generator, the server, PostgreSQL and nats-server share these $(nproc) cores"
rm -f "$RESULT"
for server in $SERVERS; do
  case "$server" in
    oxbase) run_oxbase ;;
    oxbase-livequery) run_oxbase_livequery ;;
    parse) run_parse ;;
    *) echo "unknown server $server (oxbase, oxbase-livequery, parse)" >&2; exit 1 ;;
  esac
done

echo
python3 - "$RESULT" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
fmt = "{:<17} {:>11} {:>9} {:>9} {:>20} {:>8} {:>8} {:>9} {:>9} {:>8} {:>9}"
print(fmt.format("server", "subscribers", "connect s", "writes/s", "delivered/expected", "p50 ms", "p99 ms",
                 "max ms", "KiB/conn", "peak MiB", "CPU s"))
for r in rows:
    cpu = r["serverCpuSeconds"]
    cpu = "-" if cpu is None else f"{cpu:.1f}" + (f"+{r['otherCpuSeconds']:.1f}" if r["otherCpuSeconds"] else "")
    print(fmt.format(r["label"], r["subscribers"], f"{r['connectSeconds']:.1f}", f"{r['rate']:.0f}", f"{r['delivered']}/{r['expected']}",
                     f"{r['p50']:.1f}", f"{r['p99']:.1f}", f"{r['max']:.1f}", f"{r['perConnKiB']:.1f}",
                     f"{r['rssPeakKiB'] / 1024:.0f}", cpu))
print("(connect s: opening every WebSocket to the last `subscribed`, BATCH at a time;")
print(" writes/s: the writer's achieved rate; KiB/conn: server RSS growth from no client to all subscribed,")
print(" per subscriber; CPU s: the server's utime+stime over the measured window and drain, + nats-server")
print(" and, for oxbase-livequery, the API process)")
PY
