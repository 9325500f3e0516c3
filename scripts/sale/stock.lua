-- sale/stock.lua: taking an item's stock for a buy, and holding it until the order is safe.
--
--   local took = stock.take(order)
--     { hold = h, stock_after = n }          the stock is taken and held for this order
--     { refusal = code, stock_after = n }    nothing was taken: "unknown_item", "not_started", "ended",
--                                            "quantity_over_limit", "limit_exceeded", "sold_out", "lost", "rebuilding"
--     { failure = "busy" | "unavailable", err = msg }   nothing was taken (or it could not be told, and the order
--                                            stays queued for the sweeper: books/)
--   local hold <close> = took.hold
--   h:commit()     the order is safe in Kafka: the stock stays taken
--   h:release()    Kafka refused it: give the stock back now (returns "restored", "stands" or "failed")
--   A hold that goes out of scope neither committed nor released — an error, an early return in an edited
--   handler — gives its stock back by itself (compensation spawned from its __close), so no path strands stock.
--
--   stock.adopt(order)  a hold for an order whose stock an earlier request took and did not see through (an
--                       idempotent retry taking over, admission/idempotency.lua)
--   stock.sold_out(item)   the process-wide sold-out mark: 409 without asking Redis (a 1 s hint, Redis decides)
--
-- Two strategies (config.strategy), both deciding with sale/decide.lua and both coalescing the buys of an item:
-- "watch" runs one optimistic transaction per batch (WATCH, decide in Lua, MULTI/EXEC) retried by the core; "eval"
-- runs redis/take_batch.lua, the same decision inside Redis, once per batch. config.sale.coalesce says over what:
-- "process" (`lane`, below: one take per item in flight in the whole process, whichever workers the buyers came
-- to) or "worker" (sale/coalesce.lua: one per item per worker). The default follows the strategy: "process" for
-- "watch", where takes of one item on two workers conflict (make bench on 2 cores, 256 connections: ~29,500 buys/s
-- with p99 18 ms per process vs ~23,000 with p99 250 ms and retried conflicts per worker), "worker" for "eval",
-- whose takes never conflict and gain from two in flight at once (~36,000 per worker vs ~31,000 per process).
local common = require "common"
local books = require "books"
local coalesce = require "sale.coalesce"
local decide = require "sale.decide"
local buckets = require "common.buckets"
local items = require "common.items"
local K = common.keys

local M = {}

local strategy = config.strategy or "watch"
if strategy ~= "watch" and strategy ~= "eval" then
    error("config.strategy must be \"watch\" or \"eval\", got " .. tostring(strategy))
end
M.strategy = strategy

local tries = config.redis and config.redis.tries or 16
local sale = config.sale or {}

-- ===== the hold =====
local Hold = {}
Hold.__index = Hold

function Hold:commit()
    self.state = "committed"
end

function Hold:release()
    self.state = "released"
    return books.compensate(self.order)
end

-- runs however the holder's scope ends; it must not yield (it may run while an errored coroutine is closed)
Hold.__close = function(self, err)
    if self.state ~= "held" then
        return
    end
    self.state = "released"
    log.error("order " .. self.order.order_id .. " of " .. self.order.item_id .. " left its handler neither committed "
        .. "nor released" .. (err ~= nil and (" (" .. tostring(err) .. ")") or "") .. "; giving its stock back")
    local ok, serr = pcall(spawn, books.compensate, self.order)
    if not ok then -- e.g. the server is stopping: the order stays queued and the sweeper settles it
        log.error("could not start the compensation of order " .. self.order.order_id .. ": " .. tostring(serr))
    end
end

local function hold(order)
    return setmetatable({ order = order, state = "held" }, Hold)
end
M.adopt = hold

-- ===== the sold-out mark =====
function M.sold_out(item)
    return shared.get(common.soldout_key(item)) ~= nil
end

local function mark(order, took)
    -- a bucket of a bucketed item may be empty while others are not: only a refusal after a whole pass marks it
    if (order.buckets or 1) > 1 and not took.everywhere then
        return
    end
    if took.stock_after == 0 and (took.hold or took.refusal == "sold_out") then
        shared.set(common.soldout_key(order.item_id), true, common.SOLDOUT_TTL_MS)
    end
end

-- After a Redis failure we cannot tell from the reply whether the writes were applied (the connection may have
-- broken after EXEC or EVALSHA went out). The order's own key says: present means the stock was taken and the
-- order must go on to Kafka like any other. Returns true (recorded), false (not), or nil (still cannot tell: the
-- order, if taken, is in its item's queued set, and the sweeper settles it).
local function recorded(order)
    for attempt = 1, 3 do
        local status, err = redis.call("HGET", K.order(order.order_id), "status")
        if status ~= nil or err == nil then
            return status == "queued"
        end
        sleep(50 * attempt)
    end
    log.error("outcome unknown for order " .. order.order_id .. " (item " .. order.item_id
        .. "): Redis failed around its transaction and cannot be asked; the sweeper settles it")
    return nil
end

-- ===== strategy "watch": one optimistic transaction per batch =====

-- the order as stored in Redis (status; the queued set holds it until it is in MySQL) and sent to Kafka
local function order_fields(order)
    return "item_id", order.item_id, "user_id", order.user_id, "quantity", order.quantity,
        "status", "queued", "created_at", order.created_at
end

-- decides every entry against one snapshot of the item and writes the accepted ones; sets entry.took
local function run_watch(item, entries) -- item: the item's tag, or its bucket's (common/buckets.lua)
    local users = {}
    for i, e in ipairs(entries) do
        users[i] = e.order.user_id
    end
    local res, err = redis.optimistic {
        watch = { K.stock(item), K.meta(item), K.users(item) },
        read = {
            { "GET", K.stock(item) },
            { "HMGET", K.meta(item), "limit_per_user", "starts_at", "ends_at", "rebuilding" },
            { "HMGET", K.users(item), table.unpack(users) },
        },
        tries = tries,
        fn = function(tx, r)
            local meta, counts = r[2] or {}, r[3] or {}
            local it = { limit = common.int_or_nil(meta[1]), starts_at = common.int_or_nil(meta[2]),
                         ends_at = common.int_or_nil(meta[3]), rebuilding = meta[4] or nil }
            local stock = common.int_or_nil(r[1]) or 0
            local bought, taken = {}, 0
            for i, e in ipairs(entries) do
                local o = e.order
                bought[o.user_id] = bought[o.user_id] or common.int_or_nil(counts[i]) or 0
                local refusal
                if it.limit == nil then
                    refusal = "no_meta" -- unknown, or lost with Redis's data: told apart after (no_meta below)
                else
                    refusal = decide(it, stock - taken, bought[o.user_id], o.quantity, o.created_at)
                end
                if refusal == nil then
                    taken = taken + o.quantity
                    bought[o.user_id] = bought[o.user_id] + o.quantity
                end
                e.took = { refusal = refusal, stock_after = stock - taken }
            end
            if taken == 0 then
                return true -- nothing queued: the core UNWATCHes and sends no EXEC
            end
            -- the accepted buyers' new counts in one HSET (exact: the users hash is watched, so no count changed
            -- since it was read), their orders in one ZADD, and one HSET per order
            tx:queue("DECRBY", K.stock(item), taken)
            tx:queue("INCRBY", K.sold(item), taken)
            local counts_after, queued, seen = {}, {}, {}
            for _, e in ipairs(entries) do
                local o = e.order
                if e.took.refusal == nil then
                    if not seen[o.user_id] then
                        seen[o.user_id] = true
                        counts_after[#counts_after + 1] = o.user_id
                        counts_after[#counts_after + 1] = bought[o.user_id]
                    end
                    tx:queue("HSET", K.order(o.order_id), order_fields(o))
                    queued[#queued + 1] = o.created_at
                    queued[#queued + 1] = o.order_id
                end
            end
            tx:queue("HSET", K.users(item), table.unpack(counts_after))
            tx:queue("ZADD", K.queued(item), table.unpack(queued))
        end,
    }
    if res == nil or res == false then
        local failure = err == redis.CONFLICT and "busy" or "unavailable"
        for _, e in ipairs(entries) do
            e.took = { failure = failure, err = err }
            -- an I/O failure (not EXECABORT, not a conflict) may have come after EXEC was applied
            if res == nil and failure == "unavailable" and recorded(e.order) then
                e.took = { stock_after = -1 }
            end
        end
    end
end

-- ===== strategy "eval": the same decision inside Redis, one script call per batch =====
-- Buys of an item coalesce as in "watch", and redis/take_batch.lua decides for the whole batch in one call, so a
-- hot item costs Redis one script per batch instead of one per buyer.
local TAKE = "local decide = (function()\n" .. app.file("sale/decide.lua") .. "\nend)()\n"
    .. app.file("redis/take_batch.lua")

local function run_eval(item, entries) -- item: the item's tag, or its bucket's (common/buckets.lua)
    local keys = { K.stock(item), K.users(item), K.sold(item), K.meta(item), K.queued(item) }
    local args = { entries[1].order.item_id }
    for _, e in ipairs(entries) do
        local o = e.order
        keys[#keys + 1] = K.order(o.order_id)
        local n = #args
        args[n + 1], args[n + 2], args[n + 3], args[n + 4] = o.order_id, o.user_id, o.quantity, o.created_at
    end
    local res, err = redis.evalsha(TAKE, keys, args)
    for i, e in ipairs(entries) do
        local decision = type(res) == "table" and res[2 * i - 1]
        if type(decision) == "string" then
            e.took = { refusal = decision ~= "ok" and decision or nil, stock_after = res[2 * i] }
        elseif res == nil and recorded(e.order) then
            e.took = { stock_after = -1 } -- the script ran before the connection broke: the order stands
        else
            e.took = { failure = "unavailable", err = err or "unexpected reply from the take script" }
        end
    end
end

-- ===== an item without meta =====
-- The take found no meta: the item is unknown, or Redis lost its data (then the epoch is gone too: books/loss.lua),
-- or its keys vanished alone (the epoch intact, and the item on the process's list of items MySQL knows: 503 too;
-- a made-up id costs one shared-store lookup, never a MySQL query). The epoch is in a slot of its own on a cluster,
-- so it is asked apart, only on this rare path; nothing was taken either way, so the two reads need not be atomic
-- (a loss between them answers 404 instead of 503 once, for an item not on the list).
local function no_meta(tag, entries)
    local why
    for _, e in ipairs(entries) do
        if e.took and e.took.refusal == "no_meta" then
            local item = e.order.item_id
            if why == nil and tag ~= item then
                -- a bucket without meta: the item is being rebuilt (its buckets come back with it), or it was set up
                -- again with fewer buckets than this process still knew (a second at most: common/items.lua)
                local r, err = redis.call("HMGET", K.meta(item), "limit_per_user", "rebuilding")
                if type(r) ~= "table" then
                    why = { failure = "unavailable", err = err }
                elseif r[2] then
                    why = { refusal = "rebuilding", stock_after = 0 }
                elseif r[1] then
                    items.changed(item)
                    why = { failure = "busy", err = "the item's buckets changed; try again" }
                end
            end
            if why == nil then
                local epoch, err = redis.call("GET", K.epoch)
                if epoch == nil and err ~= nil then
                    why = { failure = "unavailable", err = err }
                elseif epoch and common.known_item(item) then
                    -- MySQL knows it: its keys vanished with the epoch intact (deleted, evicted); the loss watcher
                    -- rebuilds it (books/loss.lua), asked to look at it now
                    common.ask_rebuild(item)
                    why = { refusal = "rebuilding", stock_after = 0 }
                else
                    why = { refusal = epoch and "unknown_item" or "lost", stock_after = 0 }
                end
            end
            e.took = why
        end
    end
end

-- A take on a slot whose master just failed over to a replica would sell from a stock that may lack the master's
-- last writes: refused as "rebuilding" (503) until the loss watcher has compared the masters (books/loss.lua marks the
-- item, then rebuilds it from MySQL). redis.failover_pending is a process-wide array read; false on a single Redis.
local function take_then_no_meta(take)
    return function(tag, entries)
        if redis.failover_pending(K.meta(tag)) then
            for _, e in ipairs(entries) do
                e.took = { refusal = "rebuilding", stock_after = 0 }
            end
            return
        end
        take(tag, entries)
        no_meta(tag, entries)
    end
end

-- ===== process-wide coalescing: one take per item in flight in the whole process =====
-- Buys of an item queue on its lane (`lane`, C-owned and shared by every worker); the first of them leads a batch:
-- it claims what queued from any worker, runs the take in its own VM, and hands each buyer its outcome as a string.
-- Each buyer then builds its own hold in its own coroutine. An order crosses as "order_id user_id quantity
-- created_at" (ids are [A-Za-z0-9_.:-]), an outcome as "o stock_after", "r refusal stock_after" or "f failure err".
local run = take_then_no_meta(strategy == "eval" and run_eval or run_watch)
local batch_max = math.tointeger(sale.batch_max) or 256
local queue_wait_ms = math.tointeger(sale.queue_wait_ms) or 3000
local window_ms = math.tointeger(sale.batch_window_ms) or 0
local http = config.http or {}
local bound_ms = math.tointeger(http.deadline_ms) or 10000
if bound_ms <= 0 then
    bound_ms = 60000 -- no request deadline: a follower still never waits for ever
end
local batches = metrics.counter("seckilld_sale_batches_total", { strategy = strategy })
local batched = metrics.counter("seckilld_sale_batched_buys_total", { strategy = strategy })

local function encode_order(o)
    return string.format("%s %s %d %d", o.order_id, o.user_id, o.quantity, o.created_at)
end

local function decode_order(tag, s)
    local id, user, q, at = s:match("^(%S+) (%S+) (%d+) (%d+)$")
    return { order_id = id, item_id = buckets.item_of(tag), tag = tag, user_id = user, quantity = math.tointeger(q),
             created_at = math.tointeger(at) }
end

local function encode_took(t)
    if t.failure then
        return "f " .. t.failure .. " " .. tostring(t.err)
    elseif t.refusal then
        return string.format("r %s %d", t.refusal, t.stock_after)
    end
    return string.format("o %d", t.stock_after)
end

local function decode_took(s)
    local kind, rest = s:sub(1, 1), s:sub(3)
    if kind == "o" then
        return { stock_after = math.tointeger(rest) }
    elseif kind == "r" then
        local refusal, n = rest:match("^(%S+) (%-?%d+)$")
        return { refusal = refusal, stock_after = math.tointeger(n) }
    end
    local failure, err = rest:match("^(%S+) (.*)$")
    return { failure = failure, err = err }
end

-- leads one batch of `item`: ours first, then what queued (from every worker); answers the others, returns ours
local function lead(batch, order)
    local b <close> = batch -- finishes with failures for the claimed buyers if anything below raises
    if window_ms > 0 then
        sleep(window_ms)
    end
    local entries = { { order = order } }
    for i, p in ipairs(b:claim(batch_max - 1)) do
        entries[i + 1] = { order = decode_order(order.tag, p) }
    end
    batches()
    batched(#entries)
    local ok, err = pcall(run, order.tag, entries)
    if not ok then
        err = tostring(err)
        log.error("take batch for " .. order.item_id .. " failed: " .. err)
        b:finish({}) -- every other buyer gets nil, "batch failed"
        return { failure = "unavailable", err = err }
    end
    local results = {}
    for i = 2, #entries do
        results[i - 1] = encode_took(entries[i].took)
    end
    b:finish(results)
    return entries[1].took
end

local take_coalesced = function(order)
    local r, err = lane.submit(order.tag, encode_order(order), queue_wait_ms, bound_ms)
    if r == nil then
        return { failure = err == "busy" and "busy" or "unavailable", err = err }
    elseif type(r) == "string" then
        return decode_took(r)
    end
    return lead(r, order)
end

-- config.sale.coalesce = "worker": the same batches, one lane per item on each worker (no cross-thread hand-off)
local mode = sale.coalesce or (strategy == "watch" and "process" or "worker")
if mode ~= "process" and mode ~= "worker" then
    error("config.sale.coalesce must be \"process\" or \"worker\", got " .. tostring(mode))
end
M.coalesce = mode
if mode == "worker" then
    local lanes = coalesce.new(function(item, entries)
        batches()
        batched(#entries)
        return run(item, entries)
    end, { batch_max = batch_max, wait_ms = queue_wait_ms })
    take_coalesced = function(order)
        local entry = { order = order }
        local ok, err = lanes:submit(order.tag, entry)
        if not ok then
            return { failure = err == "busy" and "busy" or "unavailable", err = err }
        end
        return entry.took
    end
end

-- ===== stock buckets (common/buckets.lua): the rest of an order from the other buckets =====
local PART = common.redis_script("take_part")
local PART = common.redis_script("take_part")
local FINAL = "local decide = (function()\n" .. app.file("sale/decide.lua") .. "\nend)()\n"
    .. app.file("redis/take_final.lua")

local function part_keys(tag, order_id)
    return { K.stock(tag), K.sold(tag), K.meta(tag), K.parts(tag), K.part(tag, order_id) }
end

-- gives back the parts of an order that was not recorded (one that cannot be now stays held: the sweeper gives it
-- back, as its order never appears)
local function give_back(order, parts)
    if #parts > 0 then
        books.settle_parts(order.order_id, order.item_id, buckets.encode_parts(parts), "return")
        shared.delete(common.soldout_key(order.item_id)) -- units came back (a mark set meanwhile is a 1 s hint)
    end
end

-- The user's bucket had fewer than `quantity` units (`short` of them): take the rest from the other buckets, each a
-- part, then record the order in the user's bucket with the units it still holds. A bucket that gives less than was
-- asked is empty; when the others are empty and the user's bucket is short, every part goes back: sold_out.
local function gather(order, short)
    local item, q, k = order.item_id, order.quantity, order.buckets
    local home = buckets.of_user(order.user_id, k)
    for b = 0, k - 1 do
        if redis.failover_pending(K.meta(buckets.tag(item, b))) then
            -- a bucket whose master just failed over may sell a stale stock: not a part of it (take_then_no_meta)
            return { refusal = "rebuilding", stock_after = 0 }
        end
    end
    local parts, by_bucket, got = {}, {}, 0
    for _ = 1, 4 do
        local want = q - got - math.max(short or 0, 0)
        for i = 1, k - 1 do
            if want <= 0 then
                break
            end
            local b = (home + i) % k
            local tag = buckets.tag(item, b)
            local n, err = redis.evalsha(PART, part_keys(tag, order.order_id), { order.order_id, want, math.floor(now()) })
            if type(n) ~= "number" then -- a part it may have taken stays held: the sweeper gives it back
                give_back(order, parts)
                return { failure = "unavailable", err = err or "unexpected reply from the part script" }
            end
            if n > 0 then
                if by_bucket[b] == nil then
                    by_bucket[b] = { b = b, units = 0 }
                    parts[#parts + 1] = by_bucket[b]
                end
                by_bucket[b].units = by_bucket[b].units + n
                got, want = got + n, want - n
            end
        end
        local r, err = redis.evalsha(FINAL,
            { K.stock(order.tag), K.users(order.tag), K.sold(order.tag), K.meta(order.tag), K.queued(order.tag),
              K.order(order.order_id) },
            { item, order.order_id, order.user_id, q, q - got, order.created_at, buckets.encode_parts(parts) })
        if type(r) ~= "table" then
            local was = r == nil and recorded(order)
            if was then
                return { stock_after = -1 } -- the script ran before the connection broke: the order stands
            elseif was == false then
                give_back(order, parts)
            end -- nil: cannot tell; its parts stay held and the sweeper settles them with the order
            return { failure = "unavailable", err = err or "unexpected reply from the take script" }
        end
        if r[1] == "ok" then
            return { stock_after = r[2] }
        end
        if r[1] ~= "short" then
            give_back(order, parts)
            return { refusal = r[1] == "no_meta" and "rebuilding" or r[1], stock_after = r[2] }
        end
        short = r[2]
        if want > 0 then -- the others gave less than asked: they are empty, and this bucket is short
            break
        end
    end
    give_back(order, parts)
    -- what the whole item has left: this bucket's units and the parts given back (the others are empty); the
    -- process-wide sold-out mark is set only when that is nothing
    return { refusal = "sold_out", stock_after = math.max(short or 0, 0) + got, everywhere = true }
end

-- Where an order of `order.item_id` by `order.user_id` is taken: its user's bucket (the item's own tag unless the item
-- has buckets). Sets order.tag, order.buckets and the order's id, which carries that tag's slot token (`unique`: the
-- id's own part, a uuid unless given). nil and an error when the item's settings cannot be read (Redis is down).
function M.place(order, unique)
    local settings, err = items.get(order.item_id)
    if settings == nil then
        return nil, err
    end
    local k = settings and settings.buckets or 1
    order.buckets, order.bucket = k, buckets.of_user(order.user_id, k)
    order.tag = buckets.tag(order.item_id, order.bucket)
    order.order_id = common.order_id(order.tag, unique or uuid())
    return true
end

function M.take(order)
    order.tag = order.tag or order.item_id
    local took = take_coalesced(order)
    if took.refusal == "sold_out" and (order.buckets or 1) > 1 then
        took = gather(order, took.stock_after)
    end
    if took.failure == nil then
        if took.refusal == nil then
            took.hold = hold(order)
        end
        mark(order, took)
    end
    return took
end

return M
