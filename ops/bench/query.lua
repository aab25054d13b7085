-- GET /classes/Bench?where={"group":N}: an indexed field, 10 results each.
local groups = tonumber(os.getenv("BENCH_GROUPS") or "1000")
request = function()
  local where = string.format('%%7B%%22group%%22%%3A%d%%7D', math.random(groups) - 1)
  return wrk.format("GET", "/parse/classes/Bench?where=" .. where, {["X-Parse-Application-Id"] = "bench"})
end
