-- GET /classes/Bench/{id} for random ids from ids.txt.
local ids = {}
function init(args)
  for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids + 1] = line end
end
-- BENCH_SESSION, when set, is sent as the session token.
local headers = {["X-Parse-Application-Id"] = "bench"}
if os.getenv("BENCH_SESSION") then headers["X-Parse-Session-Token"] = os.getenv("BENCH_SESSION") end
request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("GET", "/parse/classes/Bench/" .. id, headers)
end
