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
app.route("GET", "/sema/count", function(req)
    return 200, { count = sema:count() }
end)
app.route("GET", "/sema/misuse", function(req)
    local ok, err = pcall(function() return semaphore.new(-1) end)
    local s = semaphore.new(2)
    local a, b = s:wait(0), s:wait(0)
    local c, cerr = s:wait(0)
    return 200, { raised = not ok, a = a, b = b, c = c or false, cerr = cerr }
end)

-- limit: one process-wide bucket per key (the rate is tiny, so nothing refills during the test)
app.route("POST", "/limit/{key}", function(req)
    local ok, retry = limit.take(req.params.key, tonumber(req.query.rate) or 0.001, tonumber(req.query.burst) or 10)
    return 200, { ok = ok, retry = retry }
end)
app.route("GET", "/limit-misuse", function(req)
    local out = {}
    for name, args in pairs({ rate = { "k", 0, 1 }, burst = { "k", 1, 0.5 }, cost = { "k", 1, 1, -1 },
                              key = { nil, 1, 1 }, nan = { "k", 0 / 0, 1 } }) do
        local ok, err = pcall(limit.take, table.unpack(args, 1, 4))
        out[name] = not ok and tostring(err) or "did not raise"
    end
    return 200, out
end)

-- crypto
app.route("POST", "/crypto", function(req)
    local b = req:json()
    local mac = crypto.hmac_sha256(b.key, b.msg)
    local r1, r2 = crypto.random_hex(16), crypto.random_hex(16)
    local bad = {}
    for _, args in ipairs({ { crypto.random_hex, 0 }, { crypto.random_hex, 65 }, { crypto.hmac_sha256, "k" },
                            { crypto.equal, "a", {} } }) do
        local ok, err = pcall(args[1], args[2], args[3])
        bad[#bad + 1] = not ok and tostring(err) or "did not raise"
    end
    return 200, { mac = mac, same = crypto.equal(mac, crypto.hmac_sha256(b.key, b.msg)),
                  other = crypto.equal(mac, crypto.hmac_sha256(b.key, b.msg .. "x")),
                  shorter = crypto.equal(mac, mac:sub(2)), r1 = r1, r2 = r2, bad = bad }
end)

-- counters: named process-wide arrays of atomic cells, resolved once per VM
local cached = {}
local function counters(name, n)
    local c = cached[name]
    if c == nil then
        c = shared.counters(name, n)
        cached[name] = c
    end
    return c
end
app.route("POST", "/counters/{name}/{cell}", function(req)
    local c = counters(req.params.name, 4)
    return 200, { value = c:add(tonumber(req.params.cell), tonumber(req.query.d)) }
end)
app.route("GET", "/counters/{name}", function(req)
    local c = shared.counters(req.params.name) -- looked up, never made
    if c == nil then
        return 200, { exists = false }
    end
    local cells = {}
    for i = 1, c:size() do
        cells[i] = c:get(i)
    end
    return 200, { exists = true, cells = cells }
end)
app.route("GET", "/counters-misuse", function(req)
    local out = {}
    local c = shared.counters("misuse", 2)
    for name, fn in pairs({ cell0 = function() return c:add(0) end, cell3 = function() return c:get(3) end,
                            size = function() return shared.counters("misuse", 3) end,
                            zero = function() return shared.counters("z", 0) end,
                            notc = function() return c.add({}, 1) end }) do
        local ok, err = pcall(fn)
        out[name] = not ok and tostring(err) or "did not raise"
    end
    return 200, out
end)
