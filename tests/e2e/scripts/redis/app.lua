-- Routes exercising the redis module for tests/e2e/30_redis.py. Every route answers JSON describing exactly what
-- the Lua side saw, so the test can assert the mapping (types included).

local function describe(v)
    local t = type(v)
    if t == "table" then
        local out = {}
        for i, x in ipairs(v) do out[i] = describe(x) end
        if v.err then out.err = v.err end
        return { table = out }
    end
    return { [t] = v == nil and true or v }
end

local function pack(...)
    local n = select("#", ...)
    local out = { n = n }
    for i = 1, n do out[i] = describe((select(i, ...))) end
    return out
end

-- /call?k=key : one of each reply type
app.route("GET", "/types/{k}", function(req)
    local k = req.params.k
    redis.call("DEL", k, k .. ":list")
    return 200, {
        status = pack(redis.call("SET", k, "v")),
        bulk = pack(redis.call("GET", k)),
        integer = pack(redis.call("INCR", k .. ":n")),
        nilreply = pack(redis.call("GET", k .. ":missing")),
        empty = pack(redis.call("LRANGE", k .. ":list", 0, -1)),
        array = pack((function() redis.call("RPUSH", k .. ":list", "a", 2, 3.0) return redis.call("LRANGE", k .. ":list", 0, -1) end)()),
        mget = pack(redis.call("MGET", k, k .. ":missing")),
        error = pack(redis.call("INCR", k)),
        binary = pack(redis.call("ECHO", "a\0b")),
    }
end)

app.route("GET", "/pipeline/{k}", function(req)
    local k = req.params.k
    local res, err = redis.pipeline(function(p)
        p:call("DEL", k)
        p:call("INCR", k)
        p:call("INCRBY", k, 41)
        p:call("GET", k)
        p:call("GET", k .. ":missing")
        p:call("HGET", k, "f") -- WRONGTYPE: an error reply
    end)
    if not res then return 503, { error = err } end
    local out = { n = res.n }
    for i = 1, res.n do out[i] = { value = describe(res[i][1]), err = res[i][2] } end
    return 200, out
end)

local SCRIPT = "return redis.call('INCRBY', KEYS[1], ARGV[1])"

app.route("GET", "/evalsha/{k}/{by}", function(req)
    local v, err = redis.evalsha(SCRIPT, { req.params.k }, { req.params.by })
    if v == nil then return 503, { error = err } end
    if v == false then return 500, { error = err } end
    return 200, { value = v }
end)

-- read-modify-write increments through redis.optimistic; retries conflicts beyond `tries` itself so the count is
-- exact
app.route("POST", "/incr/{k}", function(req)
    local k = req.params.k
    local n = tonumber(req.query.n or "1")
    local conflicts = 0
    for _ = 1, n do
        while true do
            local res, err = redis.optimistic {
                watch = { k },
                read = { { "GET", k } },
                tries = tonumber(req.query.tries or "16"),
                gate = req.query.gate and true or nil,
                gate_width = tonumber(req.query.gate_width),
                fn = function(tx, replies)
                    local v = tonumber(replies[1] or "0")
                    tx:queue("SET", k, v + 1)
                end,
            }
            if res then break end
            if err ~= "conflict" then return 503, { error = err } end
            conflicts = conflicts + 1
        end
    end
    return 200, { conflicts = conflicts }
end)

-- a gated transaction whose fn holds its gate for `ms` (a BLPOP that times out, on the leased connection only):
-- with gate_width 1 the others queue behind it, and those that wait past redis.gate_wait_ms get nil, "busy".
-- hold=1: it holds the gate until the test pushes to {k}:release (a BLPOP of 60 s at most: the config's
-- command_timeout_ms must be longer), and GET /holding/{k} says true meanwhile.
app.route("GET", "/gateslow/{k}", function(req)
    local k = req.params.k
    local t0 = now()
    local hold = req.query.hold == "1"
    local res, err = redis.optimistic {
        watch = { k },
        gate = true,
        fn = function(tx)
            if hold then
                shared.set("holding:" .. k, true)
                tx:call("BLPOP", k .. ":release", 60)
                shared.set("holding:" .. k, false)
            else
                tx:call("BLPOP", k .. ":never", tonumber(req.query.ms or "100") / 1000)
            end
            tx:queue("INCR", k)
        end,
    }
    return 200, { ok = res ~= nil, err = err, ms = now() - t0 }
end)

app.route("GET", "/holding/{k}", function(req)
    return 200, { holding = shared.get("holding:" .. req.params.k) or false }
end)

-- a Lua error raised inside a gated fn: the gate is released on the way out, so the next transaction on the key
-- proceeds at once instead of waiting redis.gate_wait_ms for "busy"
app.route("GET", "/gateerror/{k}", function(req)
    local k = req.params.k
    local ok, err = pcall(redis.optimistic, {
        watch = { k },
        gate = k,
        fn = function(tx)
            tx:queue("SET", k, "never")
            error("boom in gated fn")
        end,
    })
    local t0 = now()
    local res, err2 = redis.optimistic { watch = { k }, gate = k, fn = function(tx) tx:queue("SET", k, "after") end }
    return 200, { ok = ok, err = tostring(err), next_ok = res ~= nil, next_err = err2, next_ms = now() - t0 }
end)

-- gate argument misuse raises
app.route("GET", "/gatemisuse", function(req)
    local ok1, e1 = pcall(redis.optimistic, { gate = true, fn = function() end })
    local ok2, e2 = pcall(redis.optimistic, { watch = { "x" }, gate = true, gate_width = 0, fn = function() end })
    return 200, { ok1 = ok1, e1 = tostring(e1), ok2 = ok2, e2 = tostring(e2) }
end)

-- fn that reads more with tx:call and returns without writing
app.route("GET", "/readonly/{k}", function(req)
    local k = req.params.k
    local a, b, c = redis.optimistic {
        watch = { k },
        read = { { "GET", k } },
        fn = function(tx, replies)
            local extra, err = tx:call("STRLEN", k)
            local bad, msg = tx:call("HGET", k, "x")
            return replies[1], extra, msg
        end,
    }
    return 200, { first = a, extra = b, err = c }
end)

-- fn raising an error after its WATCH: the error reaches the handler, the connection is cleaned
app.route("GET", "/fnerror/{k}", function(req)
    local ok, err = pcall(redis.optimistic, {
        watch = { req.params.k },
        read = { { "GET", req.params.k } },
        fn = function(tx, replies)
            tx:queue("SET", req.params.k, "never")
            error("boom in fn")
        end,
    })
    return 200, { ok = ok, err = tostring(err) }
end)

-- fn that tries another yielding binding inside fn: refused with a clear error
app.route("GET", "/fnsleep", function(req)
    local ok, err = pcall(redis.optimistic, { watch = { "x" }, fn = function() sleep(1) end })
    return 200, { ok = ok, err = tostring(err) }
end)

-- a transaction that must see no WATCH left by an earlier one on the same connection: it WATCHes nothing,
-- and checks that an outside change to key does not make its EXEC fail
app.route("GET", "/nowatch/{k}", function(req)
    local res, err = redis.optimistic {
        watch = { req.params.k .. ":other" },
        tries = 1,
        fn = function(tx)
            tx:queue("SET", req.params.k .. ":other", "1")
        end,
    }
    return 200, { ok = res ~= nil, err = err }
end)

-- EXECABORT: a queued command with the wrong arity
app.route("GET", "/execabort", function(req)
    local a, b = redis.optimistic { watch = { "x" }, fn = function(tx) tx:queue("SET", "x") end }
    return 200, { a = a, b = b }
end)

app.route("GET", "/incr1/{k}", function(req)
    local v, err = redis.call("INCR", req.params.k)
    if not v then return 503, { error = err } end
    return 200, { v = v }
end)

app.route("GET", "/dec/{k}", function(req)
    local res, err = redis.optimistic {
        watch = { req.params.k },
        read = { { "GET", req.params.k } },
        tries = 16,
        gate = req.query.gate and true or nil,
        gate_width = tonumber(req.query.gate_width),
        fn = function(tx, replies)
            tx:queue("DECR", req.params.k)
        end,
    }
    if not res then return 409, { error = err } end
    return 200, { v = res[1] }
end)

local DEC = "return redis.call('DECR', KEYS[1])"
app.route("GET", "/evaldec/{k}", function(req)
    local v, err = redis.evalsha(DEC, { req.params.k })
    if not v then return 503, { error = err } end
    return 200, { v = v }
end)
