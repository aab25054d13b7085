#!/usr/bin/env bash
# Push benchmark (services/oxbase/examples/push_bench.rs says what it
# measures): one push to INSTALLATIONS devices (ANDROID_PERCENT of them
# android, the rest ios), sent by one `oxbase push` process to local fakes
# of FCM HTTP v1 and APNs (HTTP/2 over TLS). Target: all sent within 60 s,
# with the push process's peak memory under 300 MB.
#
#   ops/bench/push.sh     (INSTALLATIONS=1000000 ANDROID_PERCENT=50)
#
# DATABASE=postgres runs it on PostgreSQL (ops/postgres.sh) instead of the
# embedded SQLite store; BADGE=Increment raises every device's badge.
source "$(dirname "$0")/lib.sh"
INSTALLATIONS="${INSTALLATIONS:-1000000}"
ANDROID_PERCENT="${ANDROID_PERCENT:-50}"
export PATH="$ROOT/.oxbase/tools/bin:$PATH"
command -v nats-server >/dev/null || { echo "nats-server not found: run bash ops/test.sh once" >&2; exit 1; }
NATS_PORT=$((BENCH_PORT + 2))
NATS_URL="nats://127.0.0.1:$NATS_PORT"
mkdir -p "$BENCH_DIR"
if [ "${DATABASE:-sqlite}" = postgres ]; then
  source "$ROOT/ops/postgres.sh"
  DB_NAME="oxbase_push_bench_$$"
  psql "$OXBASE_TEST_POSTGRES_URI" -qc "CREATE DATABASE $DB_NAME" >/dev/null
  DATABASE_URI="${OXBASE_TEST_POSTGRES_URI%/*}/$DB_NAME"
else
  DATABASE_URI="sqlite://$BENCH_DIR/data/oxbase.db"
fi
stop_all() {
  stop_oxbase
  [ -n "${NATS_PID:-}" ] && kill "$NATS_PID" 2>/dev/null && wait "$NATS_PID" 2>/dev/null
  [ -n "${DB_NAME:-}" ] && psql "$OXBASE_TEST_POSTGRES_URI" -qc "DROP DATABASE IF EXISTS $DB_NAME" >/dev/null 2>&1
  rm -rf "$BENCH_DIR"
  return 0
}
trap stop_all EXIT
build_oxbase
(cd "$ROOT" && cargo build --release -q -p oxbase --example push_bench)
PUSH_BENCH="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/push_bench"
nats-server -js -a 127.0.0.1 -p "$NATS_PORT" -sd "$BENCH_DIR/nats" >"$BENCH_DIR/nats.log" 2>&1 &
NATS_PID=$!
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$NATS_PORT") 2>/dev/null && break
  sleep 0.1
done
start_oxbase OXBASE_PUSH__ENABLED=true OXBASE_NATS_URL="$NATS_URL" OXBASE_DATABASE_URI="$DATABASE_URI"
echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, ${DATABASE:-sqlite}, one oxbase push, nats-server $(nats-server --version | awk '{print $NF}') with file storage"
"$PUSH_BENCH" --api "$BASE" --app-id "$APP_ID" --master-key "$MASTER_KEY" \
  --database "$DATABASE_URI" --nats "$NATS_URL" --oxbase "$OXBASE" --dir "$BENCH_DIR" \
  --installations "$INSTALLATIONS" --android-percent "$ANDROID_PERCENT" \
  --nats-pid "$NATS_PID" --api-pid "$OXBASE_PID" ${BADGE:+--badge "$BADGE"}
if grep -qiE 'error|panic' "$BENCH_DIR/push.log"; then
  echo "  oxbase push logged $(grep -ciE 'error|panic' "$BENCH_DIR/push.log") lines with errors, such as:"
  grep -iE 'error|panic' "$BENCH_DIR/push.log" | head -3
fi
