-- Routes for tests/e2e/35_redis_cluster.py: the redis module against a Redis Cluster. Each answers JSON with what
-- the Lua side saw; a failure (nil, err) is a 503 naming err.

-- SET then GET n keys spread over every slot range
app.route("GET", "/spread/{prefix}/{n}", function(req)
    local prefix, n = req.params.prefix, tonumber(req.params.n)
    local bad = 0
    for i = 1, n do
        local k = prefix .. ":" .. i
        local ok, err = redis.call("SET", k, i)
        if ok ~= "OK" then return 503, { error = err or "set refused", key = k } end
        local v, err2 = redis.call("GET", k)
        if v == nil then return 503, { error = err2, key = k } end
        if v ~= tostring(i) then bad = bad + 1 end
    end
    return 200, { n = n, bad = bad }
end)

local SCRIPT = "redis.call('INCRBY', KEYS[1], ARGV[1]) return redis.call('INCRBY', KEYS[2], ARGV[1])"

-- EVALSHA with two keys of one slot (the node learns the script on first use: NOSCRIPT -> EVAL)
app.route("GET", "/eval/{tag}/{by}", function(req)
    local t = req.params.tag
    local v, err = redis.evalsha(SCRIPT, { "{" .. t .. "}a", "{" .. t .. "}b" }, { req.params.by })
    if v == nil then return 503, { error = err } end
    if v == false then return 500, { error = err } end
    return 200, { value = v }
end)

app.route("GET", "/pipeline/{tag}", function(req)
    local k = "{" .. req.params.tag .. "}p"
    local res, err = redis.pipeline(function(p)
        p:call("DEL", k)
        p:call("INCR", k)
        p:call("INCRBY", k, 41)
        p:call("GET", k)
        p:call("PING")
    end)
    if not res then return 503, { error = err } end
    local out = {}
    for i = 1, res.n do out[i] = res[i][1] end
    return 200, { n = res.n, values = out }
end)

-- INCR under WATCH: the optimistic transaction on the key's master
app.route("POST", "/tx/{k}", function(req)
    local k = req.params.k
    local res, err = redis.optimistic {
        watch = { k },
        gate = true, -- this worker's transactions on k queue instead of conflicting
        tries = tonumber(req.query.tries), -- default: the config's redis.tries
        read = { { "GET", k } },
        fn = function(tx, r)
            tx:queue("SET", k, (tonumber(r[1]) or 0) + 1)
        end,
    }
    if res == nil then return 503, { error = err } end
    if res == false then return 500, { error = err } end
    return 200, { ok = true }
end)

-- a plain INCR (redirections followed by route.c)
app.route("POST", "/incr/{k}", function(req)
    local v, err = redis.call("INCR", req.params.k)
    if v == nil then return 503, { error = err } end
    if v == false then return 500, { error = err } end
    return 200, { value = v }
end)

-- every cross-slot form raises, nothing is sent
app.route("GET", "/cross", function(req)
    local out = {}
    local function try(name, f)
        local ok, err = pcall(f)
        out[name] = ok and "no error" or tostring(err)
    end
    try("call", function() return redis.call("MGET", "foo", "bar") end)
    try("pipeline", function() return redis.pipeline(function(p) p:call("GET", "foo") p:call("GET", "bar") end) end)
    try("evalsha", function() return redis.evalsha("return 1", { "foo", "bar" }, {}) end)
    try("optimistic", function() return redis.optimistic { watch = { "foo", "bar" }, fn = function() end } end)
    try("queue", function()
        return redis.optimistic { watch = { "foo" }, fn = function(tx) tx:queue("SET", "bar", 1) end }
    end)
    local same, err = redis.call("MGET", "{x}foo", "{x}bar")
    out.same_slot = same ~= nil and "ok" or err
    return 200, out
end)

-- redis.masters() and, per master, its port and role (INFO and ROLE through redis.call_at on a key of its slot),
-- and redis.master_of of a few keys
app.route("GET", "/masters", function(req)
    local out = {}
    for i, t in ipairs(redis.masters()) do
        local info, err = redis.call_at("x{" .. t .. "}", "INFO", "server")
        if type(info) ~= "string" then return 503, { error = err } end
        local role = redis.call_at("{" .. t .. "}", "ROLE")
        out[i] = { token = t, port = tonumber(info:match("tcp_port:(%d+)")), run_id = info:match("run_id:(%x+)"),
                   role = type(role) == "table" and role[1] or tostring(role),
                   same = redis.master_of("k{" .. t .. "}") == t }
    end
    local ok, err = pcall(redis.call_at, "{a}", "GET", "{b}")
    return 200, { masters = out, of_foo = redis.master_of("foo"), cross = ok and "no error" or tostring(err) }
end)
