-- Test app for `lane` (bindings/base/lua_lane.c), used by 25_coalesce.py: every request submits one payload
-- "VM id" (VM: a tag drawn when this VM loaded, so a result tells which workers' callers shared a batch). A leader
-- sleeps sleep_ms, claims up to max, then works work_ms, and answers each claimed payload with "VMs|payload"
-- (the set of VMs in its batch); fail=1 raises after the claim, drop=1 returns without finishing.
--
-- So that 25_coalesce.py can order events instead of timing them: a leader with want=n claims until it has n payloads;
-- with hold=claim it holds before claiming, with hold=work after claiming, until POST /release/{key}. A caller inside
-- lane.submit counts in waiting:{key} (GET /lane-state?key=). A hold or a want gives up after HOLD_CAP_MS, so a test
-- that dies early leaves nothing hanging.
local VM = uuid():sub(1, 8)
local HOLD_CAP_MS = 60000

local function held(key)
    local waited = 0
    while not shared.get("release:" .. key) and waited < HOLD_CAP_MS do
        sleep(10)
        waited = waited + 10
    end
end

app.route("POST", "/lane/{key}", function(req)
    local q = req.query
    local key = req.params.key
    local mine = VM .. " " .. (q.id or "")
    shared.incr("waiting:" .. key, 1, 0)
    local t0 = now()
    local r, err = lane.submit(key, mine, tonumber(q.wait_ms) or 3000, tonumber(q.bound_ms) or 10000)
    shared.incr("waiting:" .. key, -1, 0)
    if r == nil then
        return { ok = false, err = err, waited_ms = now() - t0 }
    elseif type(r) == "string" then
        return { ok = true, led = false, result = r }
    end
    local b <close> = r
    shared.set("led:" .. key, VM)
    sleep(tonumber(q.sleep_ms) or 20)
    if q.hold == "claim" then
        held(key)
    end
    local max = tonumber(q.max) or 64
    local payloads = b:claim(max)
    local want, waited = tonumber(q.want), 0
    while want and #payloads < want and waited < HOLD_CAP_MS do
        sleep(10)
        waited = waited + 10
        for _, p in ipairs(b:claim(max - #payloads)) do
            payloads[#payloads + 1] = p
        end
    end
    shared.incr("batches", 1, 0)
    if q.hold == "work" then
        held(key)
    end
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

app.route("POST", "/release/{key}", function(req)
    shared.set("release:" .. req.params.key, true)
    return { ok = true }
end)

-- key=: that key's leader (the VM it led on) and how many callers are inside lane.submit for it
app.route("GET", "/lane-state", function(req)
    local key = req.query.key
    return { lanes = lane.count(), batches = shared.get("batches") or 0, vm = VM,
             led = key and shared.get("led:" .. key) or json.null,
             waiting = key and shared.get("waiting:" .. key) or 0 }
end)
