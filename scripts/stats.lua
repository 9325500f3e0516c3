-- stats.lua: the live sale's numbers, for the dashboard (docs/dashboard.js): GET /admin/stats, and the counting
-- of buy answers behind it (stats.counted wraps the buy handler in app.lua; buy.lua itself is untouched).
--
-- Per item, this process counts its answers to buys by outcome ("ok" or the error code) and their latency in a
-- fixed histogram, in one array of counters per item (shared.counters: process-wide, every worker; since the process
-- started). Each worker resolves an item's array once and keeps it, so counting a buy is two atomic adds: no lock,
-- no key to build. An item is counted once an answer proved it exists (a 200, sold_out, limit_exceeded, ...) or the
-- stats route was asked about it, so made-up item ids never take room. The books (stock, sold, persisted, queued,
-- drift) come from the audit (Redis and MySQL), so they hold for every process; the answers and latencies are this
-- process's. The order's life's figures (v1.2, life/) hold for every process too: the orders paid, cancelled and
-- expired and the payments refund due are counted in MySQL, where each is decided, for this set-up of the item; the
-- counters seckilld_orders_*_total would show only what this process decided, and for no item in particular.
-- A waiting-room item (v1.2) also shows its room: how many wait, how many were let in, and the pace
-- (admission/queue.lua's counts, every process's alike: the room's places are in Redis, admission is the clock's).
local common = require "common"
local audit = require "books.audit"
local admin = require "admin"
local item_settings = require "common.items"
local queue = require "admission.queue"
local K = common.keys

local M = {}

local BOUNDS = { 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000 } -- ms; then +Inf
local MAX_ITEMS = 20
-- every outcome a buy can answer (API.md); anything else is counted as "other"
local OUTCOMES = { "ok", "sold_out", "limit_exceeded", "not_started", "ended", "bad_token", "busy", "unavailable",
                   "in_progress", "idempotency_mismatch", "bad_request", "unknown_item", "other" }
local KNOWN = {} -- outcome -> its cell in an item's array; the histogram's buckets follow the outcomes
for i, o in ipairs(OUTCOMES) do
    KNOWN[o] = i
end
local NCELLS = #OUTCOMES + #BOUNDS + 1
local cells, ncells = {}, 0 -- item -> its counter array, as resolved by this VM; how many
local MAX_CACHED = 1024     -- real items are few; the bound only matters for a flood of real items
-- outcomes that prove the item exists
local EXISTS = { ok = true, sold_out = true, limit_exceeded = true, not_started = true, ended = true,
                 bad_token = true, in_progress = true, idempotency_mismatch = true }

local function key(item)
    return "stats:" .. item
end

local function outcome(status, body)
    if status == 200 then
        return "ok"
    end
    local code
    if type(body) == "table" then
        code = body.error
    elseif type(body) == "string" then
        code = body:match('"error":"([%w_]+)"') -- an Idempotency-Key replay is JSON text
    end
    return KNOWN[code] and code or "other"
end

local function count(req, status, body, started)
    local b = req:json() -- decoded once: the handler's decode is cached on the request
    local item = type(b) == "table" and b.item_id or nil
    local code = outcome(status, body)
    local c = cells[item] -- an item counted before was a valid id then
    if c == nil then
        if not common.valid_id(item) then
            return
        end
        c = shared.counters(key(item)) -- counted already (another worker, the stats route)?
        if c == nil then
            if not EXISTS[code] then
                return
            end
            c = shared.counters(key(item), NCELLS)
            if c == nil then -- no room: not counted
                return
            end
        end
        ncells = ncells + 1
        if ncells > MAX_CACHED then
            cells, ncells = {}, 1
        end
        cells[item] = c
    end
    c:add(KNOWN[code])
    local ms, bucket = now() - started, #BOUNDS + 1
    for i, bound in ipairs(BOUNDS) do
        if ms <= bound then
            bucket = i
            break
        end
    end
    c:add(#OUTCOMES + bucket)
end

-- the handler, counting its answers; what it answers is unchanged
function M.counted(handler)
    return function(req)
        local started = now()
        local status, body, headers = handler(req)
        count(req, status, body, started)
        return status, body, headers
    end
end

-- this process's answers and latency histogram (cumulative counts, +Inf last) for an item
local function counters(item)
    local c = shared.counters(key(item), NCELLS) -- asked about: count it from now on
    local answers = {}
    for i, o in ipairs(OUTCOMES) do
        local n = c and c:get(i) or 0
        if n ~= 0 then
            answers[o] = n
        end
    end
    local bounds, counts, total = {}, {}, 0
    for i = 1, #BOUNDS + 1 do
        total = total + (c and c:get(#OUTCOMES + i) or 0)
        bounds[i] = BOUNDS[i] or json.null
        counts[i] = total
    end
    return answers, { bounds = bounds, counts = counts }
end

-- the items to show: the one asked for, or the most recently set up (at most MAX_ITEMS)
local function item_ids(only)
    if only ~= nil then
        return { only }
    end
    local ids, err = redis.call("SMEMBERS", K.items)
    if type(ids) ~= "table" then
        return nil, err
    end
    if #ids > MAX_ITEMS then
        local armed, perr = common.armed_at(ids) -- one pipeline per slot on a cluster
        if armed == nil then
            return nil, perr
        end
        table.sort(ids, function(a, b)
            if armed[a] ~= armed[b] then return armed[a] > armed[b] end
            return a < b
        end)
        for i = #ids, MAX_ITEMS + 1, -1 do
            ids[i] = nil
        end
    else
        table.sort(ids)
    end
    return ids
end

-- the order's life per item since its set-up (MySQL's items.armed_at: the instant the meta's armed_at, which the
-- audit counts from, also holds): {item -> {paid, cancelled, expired, refunds_due}}, or nil and an error. Two
-- statements for the items shown (at most MAX_ITEMS), each reading the items' orders as the audit does.
local function life_of(ids)
    local out = {}
    for _, id in ipairs(ids) do
        out[id] = { paid = 0, cancelled = 0, expired = 0, refunds_due = 0 }
    end
    if #ids == 0 then
        return out
    end
    local marks = ("?, "):rep(#ids - 1) .. "?"
    local since = "JOIN items i ON i.item_id = o.item_id WHERE o.item_id IN (" .. marks .. ") "
        .. "AND o.created_at >= FROM_UNIXTIME(i.armed_at / 1000) "
    local rows, err = mysql.query("SELECT o.item_id, CAST(SUM(o.status = 'paid') AS SIGNED) AS paid, "
        .. "CAST(SUM(o.status = 'cancelled') AS SIGNED) AS cancelled, CAST(SUM(o.status = 'expired') AS SIGNED) "
        .. "AS expired FROM orders o " .. since .. "GROUP BY o.item_id", table.unpack(ids))
    if rows == nil then
        return nil, err
    end
    for _, r in ipairs(rows) do
        local f = out[r.item_id]
        f.paid, f.cancelled, f.expired = math.tointeger(r.paid) or 0, math.tointeger(r.cancelled) or 0,
            math.tointeger(r.expired) or 0
    end
    -- a late or second payment is recorded refund_due (life/payments.lua); one order may have several
    rows, err = mysql.query("SELECT o.item_id, COUNT(*) AS n FROM payments p JOIN orders o ON o.order_id = p.order_id "
        .. since .. "AND p.outcome = 'refund_due' GROUP BY o.item_id", table.unpack(ids))
    if rows == nil then
        return nil, err
    end
    for _, r in ipairs(rows) do
        out[r.item_id].refunds_due = math.tointeger(r.n) or 0
    end
    return out
end

-- a waiting-room item's room (v1.2): waiting, admitted, admit_per_s added to its stats; true, or nil and an error
local function with_room(it)
    local s, err = item_settings.get(it.item_id) -- cached per process: no Redis call for most polls
    if s == nil then
        return nil, err
    elseif s == false or s.waiting_room == nil then -- gone since the audit, or no room: nothing to add
        return true
    end
    local counts, cerr = queue.counts(it.item_id, s.waiting_room, s.starts_at, s.armed_at)
    if counts == nil then
        return nil, cerr
    end
    it.waiting, it.admitted, it.admit_per_s = counts.waiting, counts.admitted, counts.admit_per_s
    return true
end

-- GET /admin/stats[?item_id=ID]
function M.handle(req)
    if not admin.authorized(req) then
        return common.fail(401, "unauthorized", "a valid admin bearer token is required")
    end
    local only = req.query.item_id
    if only ~= nil and not common.valid_id(only) then
        return common.bad_request("item_id must be 1-64 characters of A-Za-z0-9_.:-")
    end
    local ids, err = item_ids(only)
    if ids == nil then
        return common.unavailable("redis is unavailable: " .. tostring(err))
    end
    local items = {}
    for _, id in ipairs(ids) do
        local a, status, code, message = audit.item(id)
        if a == nil then
            if status ~= 404 or only ~= nil then
                return common.fail(status, code, message)
            end
        else
            local answers, latency = counters(id)
            items[#items + 1] = {
                item_id = id, stock_initial = a.redis.stock_initial or json.null, stock_left = a.redis.stock_left,
                sold = a.redis.sold, orders_persisted = a.mysql.persisted_units, queued_units = a.redis.queued_units,
                drift = a.drift, rebuilding = a.rebuilding, answers = answers, latency_ms = latency,
            }
        end
    end
    local shown = {}
    for i, it in ipairs(items) do
        shown[i] = it.item_id
    end
    local life, lerr = life_of(shown)
    if life == nil then
        return common.unavailable("mysql is unavailable: " .. tostring(lerr))
    end
    for _, it in ipairs(items) do
        local f = life[it.item_id]
        it.paid_orders, it.cancelled_orders, it.expired_orders, it.refunds_due = f.paid, f.cancelled, f.expired,
            f.refunds_due
        local ok, werr = with_room(it)
        if not ok then
            return common.unavailable("redis is unavailable: " .. tostring(werr))
        end
    end
    local consumer = kafka.consumer_status and kafka.consumer_status() or json.null
    local t = math.floor(now())
    if #items == 0 then -- lua-cjson 2.1.0 would encode an empty list as {}
        return 200, '{"ok":true,"now":' .. t .. ',"consumer":' .. json.encode(consumer) .. ',"items":[]}'
    end
    return 200, { ok = true, now = t, consumer = consumer, items = items }
end

return M
