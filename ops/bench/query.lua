-- GET /classes/Bench?where={"group":N}: an indexed field, 10 results each.
local groups = tonumber(os.getenv("BENCH_GROUPS") or "1000")
-- BENCH_SESSION, when set, is sent as the session token.
local headers = {["X-Parse-Application-Id"] = "bench"}
if os.getenv("BENCH_SESSION") then headers["X-Parse-Session-Token"] = os.getenv("BENCH_SESSION") end
request = function()
  local where = string.format('%%7B%%22group%%22%%3A%d%%7D', math.random(groups) - 1)
  return wrk.format("GET", "/parse/classes/Bench?where=" .. where, headers)
end
