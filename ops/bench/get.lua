-- GET /classes/Bench/{id} for random ids from ids.txt.
local ids = {}
function init(args)
  for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids + 1] = line end
end
request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("GET", "/parse/classes/Bench/" .. id, {["X-Parse-Application-Id"] = "bench"})
end
