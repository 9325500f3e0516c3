-- Test-only routes added to a copy of the shipped scripts (never shipped): fault injection on the embedded Kafka.
app.route("POST", "/_test/kafka/{state}", function(req)
    for id = 1, 3 do
        local ok, err
        if req.params.state == "down" then
            ok, err = kafka.mock_broker_down(id)
        else
            ok, err = kafka.mock_broker_up(id)
        end
        if not ok then
            return 500, { ok = false, error = tostring(err) }
        end
    end
    return 200, { ok = true }
end)

-- produces the body as is to the orders topic (key from ?key=), as a misbehaving or older producer would
app.route("POST", "/_test/produce", function(req)
    local partition, err = kafka.produce(nil, req.body or "", { key = req.query.key })
    if partition == nil then
        return 503, { ok = false, error = tostring(err) }
    end
    return 200, { ok = true, partition = partition }
end)

-- a full garbage collection of the VM serving this request, so a memory reading counts only what is live; the
-- answer names the VM (a tag drawn when it loaded), so a test can reach every worker's, and says what could hold
-- memory live: the VM's own count after the collection (KB), the registry's entries (every parked coroutine and
-- every C binding's reference is one: a leaked reference grows it) and the process's lanes still led
local VM = crypto.random_hex(4)
app.route("POST", "/_test/gc", function()
    collectgarbage("collect")
    collectgarbage("collect") -- the first may only finish a cycle in progress
    local registry = 0
    for _ in pairs(debug.getregistry()) do
        registry = registry + 1
    end
    return 200, { ok = true, vm = VM, kb = collectgarbage("count"), registry = registry, lanes = lane.count(),
                  coalesce = require("sale.stock").coalesce }
end)
