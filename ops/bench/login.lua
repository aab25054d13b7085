-- POST /login as the user ops/bench/auth.sh signed up.
request = function()
  return wrk.format("POST", "/parse/login",
    {["X-Parse-Application-Id"] = "bench", ["Content-Type"] = "application/json"},
    '{"username":"bench","password":"bench-pw"}')
end
