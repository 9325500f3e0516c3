-- Test app for `lane` (bindings/base/lua_lane.c), used by 25_coalesce.py: every request submits one payload
-- "VM id" (VM: a tag drawn when this VM loaded, so a result tells which workers' callers shared a batch). A leader
-- sleeps sleep_ms, claims up to max, then works work_ms, and answers each claimed payload with "VMs|payload"
-- (the set of VMs in its batch); fail=1 raises after the claim, drop=1 returns without finishing.
local VM = uuid():sub(1, 8)

app.route("POST", "/lane/{key}", function(req)
    local q = req.query
    local mine = VM .. " " .. (q.id or "")
    local r, err = lane.submit(req.params.key, mine, tonumber(q.wait_ms) or 3000, tonumber(q.bound_ms) or 10000)
    if r == nil then
        return { ok = false, err = err }
    elseif type(r) == "string" then
        return { ok = true, led = false, result = r }
    end
    local b <close> = r
    sleep(tonumber(q.sleep_ms) or 20)
    local payloads = b:claim(tonumber(q.max) or 64)
    shared.incr("batches", 1, 0)
    sleep(tonumber(q.work_ms) or 0)
    if q.fail == "1" then
        error("leader failed on purpose")
    elseif q.drop == "1" then
        return { ok = true, led = true, dropped = true }
    end
    local vms = { [VM] = true }
    for _, p in ipairs(payloads) do
        vms[p:match("^(%S+)")] = true
    end
    local list = {}
    for v in pairs(vms) do
        list[#list + 1] = v
    end
    table.sort(list)
    local tag = table.concat(list, ",")
    local results = {}
    for i, p in ipairs(payloads) do
        results[i] = tag .. "|" .. p
    end
    b:finish(results)
    return { ok = true, led = true, result = tag .. "|" .. mine, size = #payloads + 1 }
end)

app.route("GET", "/lane-state", function()
    return { lanes = lane.count(), batches = shared.get("batches") or 0 }
end)
