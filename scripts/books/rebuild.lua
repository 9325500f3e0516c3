-- books/rebuild.lua: the paused items rebuilt from MySQL, under the rebuild lock (books/loss.lua says when): after
-- the grace and a barrier, stock, sold and per-user counts are recomputed from the orders MySQL has, and each item
-- reopens.
local common = require "common"
local books = require "books"
local B = require "common.buckets"
local lock = require "books.lock"
local K = common.keys
local S = common.settings

local M = {}

local renew_lock = lock.renew
local RESTORE_USERS = common.redis_script("rebuild_users")
local RESTORE_FINISH = common.redis_script("rebuild_finish")
local SETUP = common.redis_script("setup")

-- A bucketed item (common/buckets.lua) comes back with all its remaining stock in the home bucket (MySQL does not know
-- which bucket gave what) and its other buckets empty, each user's count in the user's bucket; they are paused
-- (rebuilding) until the home bucket reopens. Returns the buckets, or nil and an error.
local function restore_buckets(item, k, meta, rows)
    local per = {}
    for _, r in ipairs(rows) do
        local b = B.of_user(r.user_id, k)
        if b > 0 then
            per[b] = per[b] or {}
            table.insert(per[b], r)
        end
    end
    for b = 1, k - 1 do
        local tag = B.tag(item, b)
        local res, err = redis.evalsha(SETUP, { K.stock(tag), K.users(tag), K.sold(tag), K.meta(tag), K.queued(tag),
            K.parts(tag) }, { 0, meta[3], meta[4] or "", meta[5] or "", meta[1] or 0, "0", "", 0 })
        if res == nil or res == false then
            return nil, "redis: " .. tostring(err)
        end
        redis.call("HSET", K.meta(tag), "rebuilding", "1")
        local list = per[b] or {}
        for i = 1, #list, 500 do
            local args = {}
            for j = i, math.min(i + 499, #list) do
                args[#args + 1] = list[j].user_id
                args[#args + 1] = list[j].units
            end
            local ok, herr = redis.call("HSET", K.users(tag), table.unpack(args))
            if ok == nil or ok == false then
                return nil, "redis: " .. tostring(herr)
            end
        end
    end
    local home = {}
    for _, r in ipairs(rows) do
        if B.of_user(r.user_id, k) == 0 then
            home[#home + 1] = r
        end
    end
    return home
end

local function reopen_buckets(item, k)
    for b = 1, k - 1 do
        redis.call("HDEL", K.meta(B.tag(item, b)), "rebuilding")
    end
end

-- The orders that hold units (API-v1.2.md: created and paid; a cancelled or expired one's units are back on sale),
-- per user, and the release markers of the cancelled and expired orders not yet marked released (life/release.lua),
-- written while the item is still paused: the rebuilt books do not count those units, so a release of them after the
-- rebuild must give nothing back. Both reads are one snapshot (a transaction), so an order cancelled between them
-- is either counted and released later, or neither. Returns the rows { user_id, units }, or nil and an error.
local function live_orders(item, armed_at)
    local ok, rows, ended = mysql.transaction(function(tx)
        local r, err = tx:query("SELECT user_id, CAST(SUM(quantity) AS SIGNED) AS units FROM orders WHERE item_id = ? "
            .. "AND created_at >= FROM_UNIXTIME(? / 1000) AND status IN ('created', 'paid') GROUP BY user_id",
            item, armed_at)
        if r == nil then
            return nil, err
        end
        local e, eerr = tx:query("SELECT order_id FROM orders WHERE item_id = ? AND created_at >= FROM_UNIXTIME(? / 1000) "
            .. "AND status IN ('cancelled', 'expired') AND released = 0", item, armed_at)
        if e == nil then
            return nil, eerr
        end
        return r, e
    end)
    if not ok then
        return nil, "mysql: " .. tostring(rows)
    end
    for _, group in ipairs(common.by_slot(ended, function(e) return K.released(e.order_id) end)) do
        for i = 1, #group, 500 do
            local _, rerr = redis.pipeline(function(p)
                for j = i, math.min(i + 499, #group) do
                    p:call("SET", K.released(group[j].order_id), "rebuilt", "EX", S.tombstone_ttl_s)
                end
            end)
            if rerr then
                return nil, "redis: " .. tostring(rerr)
            end
        end
    end
    return rows
end

-- recomputes one paused item from MySQL; true when it reopened (or was re-armed meanwhile)
local function restore(item)
    local meta = redis.call("HMGET", K.meta(item), "armed_at", "rebuilding", "limit_per_user", "starts_at", "ends_at",
        "admission")
    if type(meta) ~= "table" then
        return nil, "redis unavailable"
    end
    if not meta[2] then
        redis.call("SREM", K.rebuilding, item) -- set up again by an operator meantime
        return true
    end
    local armed_at = common.int_or_nil(meta[1]) or 0
    local rows, err = live_orders(item, armed_at)
    if rows == nil then
        return nil, err
    end
    local units, all = 0, rows
    local k = common.buckets_in(meta[6])
    if k > 1 then
        local rerr
        rows, rerr = restore_buckets(item, k, meta, rows)
        if rows == nil then
            return nil, rerr
        end
        for _, r in ipairs(all) do
            units = units + r.units
        end
    end
    for i = 0, #rows, 500 do -- the first chunk clears the counts, even when there are none
        local args = { i == 0 and "1" or "0" }
        for j = math.max(i, 1), math.min(i + 499, #rows) do
            args[#args + 1] = rows[j].user_id
            args[#args + 1] = rows[j].units
            if k == 1 then
                units = units + rows[j].units
            end
        end
        if i == 0 or #args > 1 then
            local res, rerr = redis.evalsha(RESTORE_USERS, { K.meta(item), K.users(item) }, args)
            if res == nil or res == false then
                return nil, "redis: " .. tostring(rerr)
            end
        end
    end
    local res, rerr = redis.evalsha(RESTORE_FINISH,
        { K.meta(item), K.stock(item), K.sold(item), K.queued(item) }, { units, S.tombstone_ttl_s })
    if res == nil or res == false then
        return nil, "redis: " .. tostring(rerr)
    end
    if k > 1 then
        reopen_buckets(item, k)
    end
    -- apart (another slot on a cluster): if this fails the item is reopened all the same, and the next round finds
    -- its meta without the flag and drops it here again
    redis.call("SREM", K.rebuilding, item)
    shared.delete(common.soldout_key(item))
    if res == 1 then
        log.warn("item " .. item .. " rebuilt from MySQL: " .. units .. " units persisted, reopened")
    end
    return true
end

-- the items to rebuild, the most recently armed first: the sale running now reopens before old, finished ones
local function paused_items()
    local items = redis.call("SMEMBERS", K.rebuilding)
    if type(items) ~= "table" or #items == 0 then
        return nil
    end
    local armed = common.armed_at(items) or {} -- one pipeline per slot on a cluster
    for _, item in ipairs(items) do
        armed[item] = armed[item] or 0
    end
    table.sort(items, function(a, b)
        return armed[a] > armed[b]
    end)
    return items
end

local function rebuild(token)
    local items = paused_items()
    if items == nil then
        return
    end
    -- the grace runs from the marking (by whichever process did it), so a resumed rebuild does not wait again
    local marked_at = common.int_or_nil(redis.call("GET", K.rebuild_marked)) or 0
    local open_at = math.min(marked_at + S.rebuild_grace_ms, math.floor(now()) + S.rebuild_grace_ms)
    log.warn("rebuilding " .. #items .. " item(s) from MySQL: waiting for buys in flight ("
        .. math.max(0, open_at - math.floor(now())) .. " ms), then for the consumer")
    while now() < open_at do
        sleep(math.max(1, math.floor(math.min(1000, open_at - now()))))
        renew_lock(token)
    end
    local passed, err = books.barrier(S.barrier_timeout_ms, function()
        return renew_lock(token)
    end)
    if not passed then
        return books.warn_every("rebuild", 5000, "rebuild postponed: " .. tostring(err))
    end
    for _, item in ipairs(items) do
        local ok, rerr = restore(item)
        if not ok then
            return log.warn("rebuild of " .. item .. " postponed: " .. tostring(rerr))
        end
        renew_lock(token)
    end
end
M.run = rebuild

return M
