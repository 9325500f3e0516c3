app.route("POST", "/incr/{key}", function(req)
    local v, err = shared.incr(req.params.key, 1, 0)
    return 200, { value = v, err = err }
end)
app.route("PUT", "/kv/{key}", function(req)
    local body = req:json()
    local ok, err = shared.set(req.params.key, body.value, body.ttl)
    return 200, { ok = ok, err = err }
end)
app.route("GET", "/kv/{key}", function(req)
    local v = shared.get(req.params.key)
    return 200, { value = v, type = type(v), is_integer = math.type(v) == "integer" }
end)

-- semaphore: coroutines of one worker waiting for each other
local sema = semaphore.new(0)
app.route("POST", "/sema/wait", function(req)
    local t0 = now()
    local ok, err = sema:wait(tonumber(req.query.ms))
    return 200, { ok = ok or false, err = err, waited_ms = math.floor(now() - t0) }
end)
app.route("POST", "/sema/post", function(req)
    sema:post(tonumber(req.query.n) or 1)
    return 200, { count = sema:count() }
end)
app.route("GET", "/sema/misuse", function(req)
    local ok, err = pcall(function() return semaphore.new(-1) end)
    local s = semaphore.new(2)
    local a, b = s:wait(0), s:wait(0)
    local c, cerr = s:wait(0)
    return 200, { raised = not ok, a = a, b = b, c = c or false, cerr = cerr }
end)
