-- POST /classes/BenchCreate with a small object.
request = function()
  local body = string.format('{"score":%d,"name":"player %d","active":true}', math.random(1000000), math.random(1000))
  return wrk.format("POST", "/parse/classes/BenchCreate", {
    ["X-Parse-Application-Id"] = "bench",
    ["Content-Type"] = "application/json",
  }, body)
end
