-- books: keeping Redis's books true to the ledger (MySQL plus the orders topic), whatever a backend does.
--
--   books.compensate(order)  gives back what a failed order took and leaves a tombstone (a late message is skipped)
--   books.barrier(ms)        proves that the consumer has persisted everything that was on the topic before it
--   books.loss.watch()       task: notices Redis losing its data (flushed, restarted), rebuilds every item from MySQL
--   books.sweep.run()        task: settles orders left "queued" (a failed compensation, an unclear Redis failure)
--   books.audit.item(id)     Redis's books beside MySQL's, and the drift between them
--
-- An order lives in Redis as a hash (status queued → persisting → created, or compensated) and in its item's
-- `queued` set until the consumer has it in MySQL. Only a tombstone (status "compensated") means "do not persist";
-- a missing order key means Redis lost it, and the consumer persists the order all the same.
local common = require "common"
local B = require "common.buckets"
local K = common.keys
local S = common.settings

local M = {}

-- a warning that a task would repeat every round: once per `ms` per process
function M.warn_every(what, ms, message)
    if shared.get("books:warned:" .. what) == nil then
        shared.set("books:warned:" .. what, true, ms)
        log.warn(message)
    end
end

-- ===== compensation (what the order's status decides: redis/compensate.lua) =====
local COMPENSATE = common.redis_script("compensate")

local function compensate_once(order)
    local tag = order.tag or order.item_id -- the user's bucket of a bucketed item (common/buckets.lua)
    return redis.evalsha(COMPENSATE,
        { K.stock(tag), K.users(tag), K.sold(tag), K.order(order.order_id), K.queued(tag) },
        { order.user_id, order.order_id, S.tombstone_ttl_s })
end

-- ===== parts: what other buckets gave an order of a bucketed item (common/buckets.lua) =====
local SETTLE_PART = common.redis_script("settle_part")

-- settles each part ("b:n b:n", as the order's hash keeps them) of an order: "return" or "keep". A part that cannot
-- be settled now stays held; the sweeper settles it by its order's fate.
function M.settle_parts(order_id, item, parts, how)
    for b in tostring(parts):gmatch("(%d+):%d+") do
        local tag = B.tag(item, math.tointeger(tonumber(b)))
        local res, err = redis.evalsha(SETTLE_PART, { K.stock(tag), K.sold(tag), K.parts(tag), K.part(tag, order_id) },
            { order_id, S.tombstone_ttl_s, how })
        if res == nil or res == false then
            log.warn("part of order " .. order_id .. " in " .. tag .. " not settled yet (the sweeper will): " .. tostring(err))
        end
    end
end

-- returns "restored", "stands" (the consumer has the order) or "failed" (left queued: the sweeper settles it)
function M.compensate(order)
    for attempt = 1, 5 do
        local res, err = compensate_once(order)
        if res == -1 then
            return "stands"
        elseif res ~= nil and res ~= false then
            if type(res) == "string" then -- undone, with parts of other buckets to give back
                M.settle_parts(order.order_id, order.item_id, res, "return")
            end
            shared.delete(common.soldout_key(order.item_id))
            return "restored"
        end
        log.warn("compensation for order " .. order.order_id .. " failed (attempt " .. attempt .. "): " .. tostring(err))
        sleep(20 * attempt)
    end
    log.error("stock not restored yet for order " .. order.order_id .. " (item " .. order.item_id .. "): Redis "
        .. "unreachable; the order stays queued and the sweeper settles it")
    return "failed"
end

-- ===== barriers =====
-- A barrier message goes to every partition of the orders topic; the consumer records each one in Redis only after
-- everything before it on that partition is in MySQL (it handles a partition in order and stores offsets after
-- success). When every partition's barrier is recorded, every order produced before the barrier is persisted.
-- `tick`, if given, is called about every second while waiting; the wait ends (nil, "abandoned") if it returns false.
function M.barrier(timeout_ms, tick)
    local n, perr = kafka.partitions()
    if n == nil then
        return nil, "kafka: " .. tostring(perr)
    end
    local token = uuid()
    local value = json.encode { barrier = token }
    for p = 0, n - 1 do
        local ok, err = kafka.produce(nil, value, { partition = p, key = "barrier" })
        if ok == nil then
            return nil, "kafka: " .. tostring(err)
        end
    end
    local deadline, next_tick = now() + timeout_ms, now() + 1000
    while now() < deadline do
        local seen = redis.call("SCARD", K.barrier(token))
        if seen ~= nil and seen >= n then
            return true
        end
        if tick and now() >= next_tick then
            if not tick() then
                return nil, "abandoned"
            end
            next_tick = now() + 1000
        end
        sleep(100)
    end
    return nil, "the consumer did not reach the barrier within " .. timeout_ms .. " ms"
end

return M
