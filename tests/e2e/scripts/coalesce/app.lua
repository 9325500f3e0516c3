-- Test app for scripts/sale/coalesce.lua (copied beside it by 25_coalesce.py): every request submits one entry.
local coalesce = require "sale.coalesce"

local batches = {} -- key -> list of batch sizes, in the order they ran
local served = {}  -- entry id -> times served

local function run(key, entries)
    local list = batches[key] or {}
    batches[key] = list
    list[#list + 1] = #entries
    sleep(tonumber(entries[1].sleep_ms) or 50)
    if entries[1].fail then
        error("run failed on purpose")
    end
    for i, e in ipairs(entries) do
        served[e.id] = (served[e.id] or 0) + 1
        e.position = i
    end
end

local c = coalesce.new(run, { batch_max = 8, wait_ms = 1000 })

app.route("POST", "/submit/{key}", function(req)
    local e = { id = req.query.id, sleep_ms = req.query.sleep_ms, fail = req.query.fail == "1" }
    local ok, err = c:submit(req.params.key, e)
    return { ok = ok or false, err = err or json.null, position = e.position or json.null }
end)

app.route("GET", "/state", function(req)
    local lanes = 0
    for _ in pairs(c.lanes) do
        lanes = lanes + 1
    end
    local served_twice = 0
    for _, n in pairs(served) do
        if n > 1 then
            served_twice = served_twice + 1
        end
    end
    return { lanes = lanes, batches = batches, served_twice = served_twice }
end)
