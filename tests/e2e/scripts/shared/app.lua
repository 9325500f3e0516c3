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
