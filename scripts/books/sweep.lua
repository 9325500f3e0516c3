-- books/sweep.lua: orders left queued are settled, so stock is never stranded.
local common = require "common"
local books = require "books"
local K = common.keys
local S = common.settings

local M = {}

-- ===== the sweeper =====
-- An order still queued long after any produce of it could have ended was either put on the topic (the consumer is
-- behind, or its "created" mark failed) or never was (its compensation failed, or Redis failed around the take).
-- MySQL tells the first; a barrier proves the second, and only then is the order released.

-- KEYS: order, queued, stock, users, sold; ARGV: order_id, tombstone ttl, order ttl, persisted ("1"/"0"), cutoff
local SETTLE = common.redis_script("settle")

local function settle(item, id, persisted, cutoff)
    if redis.cluster and redis.slot(K.order(id)) ~= redis.slot(K.queued(item)) then
        -- an id without its item's token (a single Redis's orders moved into a cluster): cannot be settled in one slot
        books.warn_every("sweep-slot", 60000, "sweeper: order " .. id .. " of " .. item .. " is not in its item's slot "
            .. "(made before order ids carried a slot token); left queued")
        return nil, "not in its item's slot"
    end
    return redis.evalsha(SETTLE, { K.order(id), K.queued(item), K.stock(item), K.users(item), K.sold(item) },
        { id, S.tombstone_ttl_s, S.order_ttl_s, persisted and "1" or "0", cutoff })
end

function M.run()
    local items = redis.call("SMEMBERS", K.items)
    if type(items) ~= "table" then
        return
    end
    local cutoff = math.floor(now()) - S.sweep_after_ms
    local stale = {} -- { item, id }
    for _, item in ipairs(items) do
        local ids = redis.call("ZRANGEBYSCORE", K.queued(item), "-inf", cutoff, "LIMIT", 0, 500)
        for _, id in ipairs(type(ids) == "table" and ids or {}) do
            stale[#stale + 1] = { item, id }
        end
    end
    if #stale == 0 then
        return
    end
    local marks, in_mysql = {}, {}
    for i, s in ipairs(stale) do
        marks[i] = "?"
    end
    local ids = {}
    for i, s in ipairs(stale) do
        ids[i] = s[2]
    end
    local rows, err = mysql.query("SELECT order_id FROM orders WHERE order_id IN (" .. table.concat(marks, ",") .. ")",
        table.unpack(ids))
    if rows == nil then
        return log.warn("sweeper: mysql: " .. tostring(err))
    end
    for _, r in ipairs(rows) do
        in_mysql[r.order_id] = true
    end
    local unproven = {}
    for _, s in ipairs(stale) do
        if in_mysql[s[2]] then
            settle(s[1], s[2], true, cutoff)
        else
            unproven[#unproven + 1] = s
        end
    end
    if #unproven == 0 then
        return
    end
    local passed, berr = books.barrier(S.barrier_timeout_ms)
    if not passed then
        return books.warn_every("sweep", 30000, "sweeper: " .. #unproven .. " stale order(s) wait: " .. tostring(berr))
    end
    -- after the barrier, an order that was on the topic is in MySQL; ask again, then release the rest
    for _, s in ipairs(unproven) do
        local again = mysql.query("SELECT 1 AS x FROM orders WHERE order_id = ?", s[2])
        if again ~= nil then
            local res = settle(s[1], s[2], #again > 0, cutoff)
            if res == 2 then
                shared.delete(common.soldout_key(s[1]))
                log.warn("sweeper: order " .. s[2] .. " of " .. s[1] .. " never reached Kafka; its stock is released")
                metrics.add("seckilld_orders_released_total", 1)
            end
        end
    end
end

return M
