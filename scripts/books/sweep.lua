-- books/sweep.lua: orders left queued are settled, so stock is never stranded.
local common = require "common"
local books = require "books"
local B = require "common.buckets"
local items = require "common.items"
local K = common.keys
local S = common.settings

local M = {}

-- ===== the sweeper =====
-- An order still queued long after any produce of it could have ended was either put on the topic (the consumer is
-- behind, or its "created" mark failed) or never was (its compensation failed, or Redis failed around the take).
-- MySQL tells the first; a barrier proves the second, and only then is the order released.

-- KEYS: order, queued, stock, users, sold (an item's or a stock bucket's); ARGV: order_id, tombstone ttl, order ttl,
-- persisted ("1"/"0"), cutoff
local SETTLE = common.redis_script("settle")

local function settle(tag, id, persisted, cutoff, ttl)
    if redis.cluster and redis.slot(K.order(id)) ~= redis.slot(K.queued(tag)) then
        -- an id without its item's token (a single Redis's orders moved into a cluster): cannot be settled in one slot
        books.warn_every("sweep-slot", 60000, "sweeper: order " .. id .. " of " .. tag .. " is not in its item's slot "
            .. "(made before order ids carried a slot token); left queued")
        return nil, "not in its item's slot"
    end
    return redis.evalsha(SETTLE, { K.order(id), K.queued(tag), K.stock(tag), K.users(tag), K.sold(tag) },
        { id, S.tombstone_ttl_s, ttl or S.order_ttl_s, persisted and "1" or "0", cutoff })
end

-- settles one stale entry: an order ({ tag, id, item }) or a held part ({ tag, id, item, part = true }) whose
-- order's fate is known: in MySQL (persisted) or proven never on the topic
local function settle_entry(e, persisted, cutoff)
    if e.part then
        books.settle_parts(e.id, e.item, e.b .. ":0", persisted and "keep" or "return")
        return persisted and 1 or 2
    end
    -- a persisted order that may still expire unpaid keeps its hash past its deadline (common.order_ttl)
    local res = settle(e.tag, e.id, persisted, cutoff, persisted and common.order_ttl(e.expires_at) or nil)
    if type(res) == "string" then -- released, with parts of other buckets (common/buckets.lua)
        books.settle_parts(e.id, e.item, res, "return")
        return 2
    end
    return res
end

-- A part another bucket gave an order (common/buckets.lua) is held until its order's fate is known. The order with the
-- consumer (persisting, created): the part stays sold. Compensated: it goes back. Still queued: later. Never recorded (the process died between the
-- part and the order), or lost with Redis's data: MySQL and a barrier tell, as for an order.
local function part_fate(e)
    local status, err = redis.call("HGET", K.order(e.id), "status")
    if status == nil and err ~= nil then
        return nil
    end
    if status == "compensated" then
        return "return"
    elseif status == "queued" then
        return nil -- its order may still be compensated (then its parts go back with it): not yet
    elseif status then
        return "keep" -- persisting or created: the consumer has the order, which stands
    end
    return "ask"
end

-- the ids of `entries` that MySQL has (one query), or nil and the error
local function in_mysql(entries)
    local marks, ids, found = {}, {}, {}
    for i, e in ipairs(entries) do
        marks[i], ids[i] = "?", e.id
    end
    local rows, err = mysql.query("SELECT order_id, expires_at FROM orders WHERE order_id IN ("
        .. table.concat(marks, ",") .. ")", table.unpack(ids))
    if rows == nil then
        return nil, err
    end
    local expires = {}
    for _, r in ipairs(rows) do
        found[r.order_id] = true
        expires[r.order_id] = r.expires_at ~= mysql.null and r.expires_at or nil
    end
    for _, e in ipairs(entries) do
        e.expires_at = expires[e.id]
    end
    return found
end

function M.run()
    local listed = redis.call("SMEMBERS", K.items)
    if type(listed) ~= "table" then
        return
    end
    local cutoff = math.floor(now()) - S.sweep_after_ms
    local stale = {} -- { tag, id, item [, part = true, b] }
    for _, item in ipairs(listed) do
        local settings = items.get(item)
        local k = settings and settings.buckets or 1
        for b = 0, k - 1 do
            local tag = B.tag(item, b)
            local ids = redis.call("ZRANGEBYSCORE", K.queued(tag), "-inf", cutoff, "LIMIT", 0, 500)
            for _, id in ipairs(type(ids) == "table" and ids or {}) do
                stale[#stale + 1] = { tag = tag, id = id, item = item }
            end
            if k > 1 then
                local held = redis.call("ZRANGEBYSCORE", K.parts(tag), "-inf", cutoff, "LIMIT", 0, 500)
                for _, id in ipairs(type(held) == "table" and held or {}) do
                    local e = { tag = tag, id = id, item = item, part = true, b = b }
                    local fate = part_fate(e)
                    if fate == "ask" then
                        stale[#stale + 1] = e
                    elseif fate then
                        books.settle_parts(id, item, b .. ":0", fate)
                    end
                end
            end
        end
    end
    if #stale == 0 then
        return
    end
    local persisted, err = in_mysql(stale)
    if persisted == nil then
        return log.warn("sweeper: mysql: " .. tostring(err))
    end
    local unproven = {}
    for _, e in ipairs(stale) do
        if persisted[e.id] then
            settle_entry(e, true, cutoff)
        else
            unproven[#unproven + 1] = e
        end
    end
    if #unproven == 0 then
        return
    end
    local passed, berr = books.barrier(S.barrier_timeout_ms)
    if not passed then
        return books.warn_every("sweep", 30000, "sweeper: " .. #unproven .. " stale order(s) wait: " .. tostring(berr))
    end
    -- after the barrier, an order that was on the topic is in MySQL; ask again (one query), then release the rest
    local again, aerr = in_mysql(unproven)
    if again == nil then
        return log.warn("sweeper: mysql: " .. tostring(aerr))
    end
    for _, e in ipairs(unproven) do
        if not e.part or part_fate(e) == "ask" then
            local res = settle_entry(e, again[e.id] == true, cutoff)
            if res == 2 then
                shared.delete(common.soldout_key(e.item))
                log.warn("sweeper: " .. (e.part and "a part of " or "") .. "order " .. e.id .. " of " .. e.item
                    .. " never reached Kafka; its stock is released")
                metrics.add("seckilld_orders_released_total", 1)
            end
        end
    end
end

return M
