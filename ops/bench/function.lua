-- POST /functions/<BENCH_FUNCTION> (default hello) with a small JSON body.
local name = os.getenv("BENCH_FUNCTION") or "hello"
local headers = {["X-Parse-Application-Id"] = "bench", ["Content-Type"] = "application/json"}
local path = "/parse/functions/" .. name
request = function()
  return wrk.format("POST", path, headers, string.format('{"name":"player %d","n":%d}', math.random(1000), math.random(1000000)))
end
