-- PUT /classes/Bench/{id} with an increment, for random ids from ids.txt.
local ids = {}
function init(args)
  for line in io.lines(os.getenv("BENCH_IDS")) do ids[#ids + 1] = line end
end
request = function()
  local id = ids[math.random(#ids)]
  return wrk.format("PUT", "/parse/classes/Bench/" .. id, {
    ["X-Parse-Application-Id"] = "bench",
    ["Content-Type"] = "application/json",
  }, '{"score":{"__op":"Increment","amount":1}}')
end
