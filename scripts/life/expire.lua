-- life/expire.lua: the task (app.every "life.expire", sale.expire_ms) that expires unpaid orders and releases ended
-- ones, on one worker of every process. MySQL is the record that never forgets: each round
--   1. persists the queued orders (not yet in MySQL) whose deadline passed (life.persist, as the consumer would);
--   2. expires every created order whose expires_at passed, in statements of BATCH rows (indexed: status,
--      released, expires_at); a payment or cancel racing it is decided by the same row's lock (life/init.lua);
--   3. releases the cancelled and expired orders not yet marked released (life/release.lua), BATCH at a time;
--   4. sets the gauge of the oldest overdue unpaid order's age (0 when none).
-- Nothing depends on a notification or on this process having seen the order: a round after an outage of MySQL or
-- Redis finds everything that came due meanwhile. Several processes run it at once; the row's guard and the release
-- marker make that harmless.
local common = require "common"
local B = require "common.buckets"
local items = require "common.items"
local life = require "life"
local K = common.keys

local M = {}

local BATCH = 5000
local ROUNDS = 40 -- statements of each kind per round at most (200,000 orders), so a round ends

local function persist_overdue()
    local listed = redis.call("SMEMBERS", K.pay_items)
    if type(listed) ~= "table" then
        return
    end
    local t = math.floor(now())
    for _, item in ipairs(listed) do
        local s = items.get(item)
        if s and s.pay_within_s > 0 then
            for b = 0, s.buckets - 1 do
                local ids = redis.call("ZRANGEBYSCORE", K.queued(B.tag(item, b)), "-inf", t - s.pay_within_s * 1000,
                    "LIMIT", 0, 500)
                for _, id in ipairs(type(ids) == "table" and ids or {}) do
                    local ok, why, err = life.persist(id)
                    if not ok and why == "unavailable" then
                        return log.warn("expiry of queued order " .. id .. " postponed: " .. tostring(err))
                    end
                end
            end
        end
    end
end

local function expire_due()
    for _ = 1, ROUNDS do
        local t = math.floor(now())
        local r, err = mysql.query("UPDATE orders SET status = 'expired', ended_at = ? WHERE status = 'created' "
            .. "AND released = 0 AND expires_at <= ? ORDER BY expires_at LIMIT ?", t, t, BATCH)
        if r == nil then
            return log.warn("expiry postponed: mysql: " .. tostring(err))
        end
        life.expired(r.affected_rows)
        if r.affected_rows < BATCH then
            return
        end
    end
end

local function release_ended()
    for _ = 1, ROUNDS do
        local done, seen = life.release.pass(BATCH)
        if done == nil then
            return log.warn("release postponed: " .. tostring(seen))
        end
        if (seen or 0) < BATCH or done == 0 then
            return
        end
    end
end

local function oldest_overdue()
    local t = math.floor(now())
    local rows = mysql.query("SELECT MIN(expires_at) AS m FROM orders WHERE status = 'created' AND released = 0 "
        .. "AND expires_at <= ?", t)
    if rows == nil then
        return -- MySQL is down: the gauge keeps its last value (SeckilldMySQLDown says why it stopped moving)
    end
    local m = rows[1] and rows[1].m
    metrics.gauge("seckilld_orders_overdue_oldest_seconds",
        (m ~= nil and m ~= mysql.null) and (t - m) // 1000 or 0) -- whole seconds (a gauge holds integers)
end

function M.run()
    persist_overdue()
    expire_due()
    release_ended()
    oldest_overdue()
end

return M
