-- Test app for scripts/sale/coalesce.lua (copied beside it by 25_coalesce.py): every request submits one entry.
--
-- So that 25_coalesce.py can order events instead of timing them, a batch led by an entry with hold=1 holds (in its
-- run) until POST /release/{key}, and one led by an entry with meet=n waits until n runs (of any keys) are in flight
-- at once; /state shows, per key, the ids queued behind the batch in flight (waiting) and whether a run holds.
-- A hold or a meet gives up after HOLD_CAP_MS, so a test that dies early leaves nothing hanging.
local coalesce = require "sale.coalesce"

local HOLD_CAP_MS = 60000

local batches = {}  -- key -> list of batch sizes, in the order they ran
local ran = {}      -- key -> entry ids in the order the batches ran them
local queued = {}   -- key -> entry ids in the order they queued behind a batch in flight
local served = {}   -- entry id -> times served
local released = {} -- key -> true once POST /release/{key}
local holding = {}  -- key -> true while a run holds
local meeting = 0   -- runs that reached a meet

local function hold(key)
    holding[key] = true
    local waited = 0
    while not released[key] and waited < HOLD_CAP_MS do
        sleep(10)
        waited = waited + 10
    end
    holding[key] = nil
end

-- each run waits until n runs are in flight at once: true if they met
local function meet(n)
    meeting = meeting + 1
    local waited = 0
    while meeting < n and waited < HOLD_CAP_MS do
        sleep(10)
        waited = waited + 10
    end
    return meeting >= n
end

local function run(key, entries)
    local list = batches[key] or {}
    batches[key] = list
    list[#list + 1] = #entries
    local order = ran[key] or {}
    ran[key] = order
    for _, e in ipairs(entries) do
        order[#order + 1] = e.id
    end
    local first = entries[1]
    if first.hold then
        hold(key)
    end
    local met
    if first.meet then
        met = meet(first.meet)
    end
    sleep(tonumber(first.sleep_ms) or 50)
    if first.fail then
        error("run failed on purpose")
    end
    for i, e in ipairs(entries) do
        served[e.id] = (served[e.id] or 0) + 1
        e.position = i
        e.met = met
    end
end

-- wait=short: queued behind a batch for 1 s at most ("busy"); otherwise 60 s, which only catches a hang
local long = coalesce.new(run, { batch_max = 8, wait_ms = 60000 })
local short = coalesce.new(run, { batch_max = 8, wait_ms = 1000 })

app.route("POST", "/submit/{key}", function(req)
    local key, q = req.params.key, req.query
    local e = { id = q.id, sleep_ms = q.sleep_ms, fail = q.fail == "1", hold = q.hold == "1",
                meet = tonumber(q.meet) }
    local c = q.wait == "short" and short or long
    if c.lanes[key] ~= nil then -- a batch is in flight: this entry queues (submit does not yield before it does)
        local list = queued[key] or {}
        queued[key] = list
        list[#list + 1] = e.id
    end
    local t0 = now()
    local ok, err = c:submit(key, e)
    return { ok = ok or false, err = err or json.null, position = e.position or json.null,
             met = e.met == nil and json.null or e.met, waited_ms = now() - t0 }
end)

app.route("POST", "/release/{key}", function(req)
    released[req.params.key] = true
    return { ok = true }
end)

app.route("GET", "/state", function(req)
    local lanes, waiting = 0, {}
    for _, c in ipairs({ long, short }) do
        for key, lane in pairs(c.lanes) do
            lanes = lanes + 1
            waiting[key] = #lane
        end
    end
    local served_twice = 0
    for _, n in pairs(served) do
        if n > 1 then
            served_twice = served_twice + 1
        end
    end
    local held = {}
    for key in pairs(holding) do
        held[#held + 1] = key
    end
    return { lanes = lanes, batches = batches, served_twice = served_twice, waiting = waiting, holding = held,
             ran = ran, queued = queued }
end)
