#!/usr/bin/env bash
# What security costs, on the embedded store: log-ins per second (bcrypt,
# cost 10, dominates), and GET by id and an indexed query over objects with
# ACLs, anonymous and with a session token (whose ACL filter then names the
# user and their roles). Prints the ratio signed-in / anonymous.
#
#   ops/bench/auth.sh               (DURATION=15s CONNECTIONS=32 RUNS=3)
source "$(dirname "$0")/lib.sh"
need wrk
trap stop_oxbase EXIT
build_oxbase
start_oxbase
H=(-H "X-Parse-Application-Id: $APP_ID" -H "Content-Type: application/json")
signup=$(curl -sf "${H[@]}" -X POST -d '{"username":"bench","password":"bench-pw"}' "$BASE/users")
USER_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["objectId"])' <<<"$signup")
TOKEN=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["sessionToken"])' <<<"$signup")
# The user is in a role, so the signed-in filter carries a role too.
curl -sf "${H[@]}" -H "X-Parse-Master-Key: $MASTER_KEY" -X POST \
  -d "{\"name\":\"Players\",\"ACL\":{\"*\":{\"read\":true}},\"users\":{\"__op\":\"AddRelation\",\"objects\":[{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"$USER_ID\"}]}}" \
  "$BASE/roles" >/dev/null
COUNT=10000
BENCH_ACL="{\"*\":{\"read\":true},\"$USER_ID\":{\"read\":true,\"write\":true},\"role:Players\":{\"write\":true}}" \
  python3 "$ROOT/ops/bench/seed.py" "$BASE" "$APP_ID" "$COUNT" "$BENCH_DIR/ids.txt"
curl -sf "${H[@]}" -G --data-urlencode 'where={"group":7}' "$BASE/classes/Bench" >/dev/null
sleep 1
export BENCH_IDS="$BENCH_DIR/ids.txt" BENCH_GROUPS=$((COUNT / 10))
echo "oxbase $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, wrk -t2 -c$CONNECTIONS -d$DURATION, $RUNS runs each"
run_wrk "login (bcrypt cost 10)" "$ROOT/ops/bench/login.lua" "$BASE"
run_wrk "GET by id, anonymous" "$ROOT/ops/bench/get.lua" "$BASE"
BENCH_SESSION=$TOKEN run_wrk "GET by id, session" "$ROOT/ops/bench/get.lua" "$BASE"
run_wrk "query, anonymous" "$ROOT/ops/bench/query.lua" "$BASE"
BENCH_SESSION=$TOKEN run_wrk "query, session" "$ROOT/ops/bench/query.lua" "$BASE"
python3 - "$BENCH_DIR/medians.txt" <<'PY'
import sys
m = dict(line.strip().split("=", 1) for line in open(sys.argv[1]))
for what in ("GET by id", "query"):
    print(f"{what}: session / anonymous = {float(m[what + ', session']) / float(m[what + ', anonymous']):.2f}")
PY
