-- books/mark.lua: pausing items for a rebuild (meta `rebuilding`: buys answer 503) from MySQL's `items` rows, after
-- a loss (books/loss.lua, books/cluster.lua) or for items whose keys vanished (books/vanished.lua).
local common = require "common"
local B = require "common.buckets"
local K = common.keys

local M = {}

local MARK = common.redis_script("rebuild_mark")

-- marks items of MySQL's `items` table (rows: what mark_all, or the vanished items' check, read) as rebuilding. Each chunk of items
-- joins the rebuilding set (and the set of items) before its metas are marked: an item marked is always found by the
-- rebuild, even if this stops half-way (one put in the set and not marked is dropped from it by restore). Those
-- sets and the metas are different slots on a cluster, so this is several calls, not one script: the marking is
-- not atomic across items, which it need not be (every item is paused by its own meta, and the epoch is set only
-- after all are marked, so an interrupted round is done again).
-- A bucketed item (common/buckets.lua) marked also pauses its other buckets (their metas get the flag), which may live
-- on other masters and would otherwise go on selling from what the rebuild is about to recompute.
-- mode: "0" every row, "1" only those without meta, "2" those without meta or whose meta is of the row's set-up
-- (redis/rebuild_mark.lua)
local function mark_rows(rows, mode)
    local marked = 0
    for i = 1, #rows, 200 do
        local chunk = {}
        for j = i, math.min(i + 199, #rows) do
            chunk[#chunk + 1] = rows[j]
        end
        local ids = {}
        for j, r in ipairs(chunk) do
            ids[j] = r.item_id
        end
        for _, set in ipairs { K.rebuilding, K.items } do
            local ok, serr = redis.call("SADD", set, table.unpack(ids))
            if ok == nil or ok == false then
                return nil, "redis: " .. tostring(serr)
            end
        end
        local bumped, berr = redis.call("INCR", K.items_generation) -- every process lists them again (common/items.lua)
        if bumped == nil or bumped == false then
            return nil, "redis: " .. tostring(berr)
        end
        -- the items with a payment step, whose overdue queued orders the expire task looks for (life/expire.lua), and
        -- those with a waiting room, whose draws its task keeps in MySQL (admission/queue.lua)
        for set, has in pairs { [K.pay_items] = common.pays, [K.queue_items] = common.queues } do
            local these = {}
            for _, r in ipairs(chunk) do
                if r.admission ~= mysql.null and has(r.admission) then
                    these[#these + 1] = r.item_id
                end
            end
            if #these > 0 then
                local ok, serr = redis.call("SADD", set, table.unpack(these))
                if ok == nil or ok == false then
                    return nil, "redis: " .. tostring(serr)
                end
            end
        end
        for _, group in ipairs(common.by_slot(chunk, function(r) return K.meta(r.item_id) end)) do
            local keys, args = {}, { mode }
            for j, r in ipairs(group) do
                keys[j] = K.meta(r.item_id)
                local n = #args
                args[n + 1], args[n + 2] = r.stock_initial, r.limit_per_user
                args[n + 3] = r.starts_at == mysql.null and "" or r.starts_at
                args[n + 4] = r.ends_at == mysql.null and "" or r.ends_at
                args[n + 5] = r.armed_at
                args[n + 6] = r.admission == mysql.null and "" or r.admission
            end
            local res, rerr = redis.evalsha(MARK, keys, args)
            if type(res) ~= "number" then
                return nil, "redis: " .. tostring(rerr)
            end
            marked = marked + res
        end
        -- a waiting room whose item is paused (its Redis lost data: all of it, a failover to a lagging replica, its
        -- keys) is set up again from MySQL: its queue is dropped, so that the next call seals it above every place
        -- MySQL reserved, its draw's places come from MySQL's copy, and placed tickets register again
        -- (admission/queue.lua)
        for _, r in ipairs(chunk) do
            if r.admission ~= mysql.null and common.queues(r.admission)
                and redis.call("HGET", K.meta(r.item_id), "rebuilding") then
                local base = K.queue(r.item_id, r.armed_at)
                local ok, derr = redis.call("DEL", base, base .. ":draw", base .. ":late")
                if ok == nil or ok == false then
                    return nil, "redis: " .. tostring(derr)
                end
            end
        end
        for _, r in ipairs(chunk) do
            local k = common.buckets_in(r.admission ~= mysql.null and r.admission or nil)
            if k > 1 and redis.call("HGET", K.meta(r.item_id), "rebuilding") then
                for b = 1, k - 1 do
                    local ok, herr = redis.call("HSET", K.meta(B.tag(r.item_id, b)), "rebuilding", "1")
                    if ok == nil or ok == false then
                        return nil, "redis: " .. tostring(herr)
                    end
                end
            end
        end
    end
    return marked
end

-- the grace of a rebuild runs from the last marking (books/rebuild.lua): marked, or nil and why
local function stamp_marked(marked)
    if marked > 0 then
        local ok, serr = redis.call("SET", K.rebuild_marked, math.floor(now()))
        if ok == nil or ok == false then
            return nil, "redis: " .. tostring(serr)
        end
    end
    return marked
end

-- pick(row), if given, chooses the items (the cluster's rounds: those with a key on a master that lost data): nil
-- leaves the row out, true marks it only if its meta is missing, false marks it in any case; without pick every row
-- is marked as only_missing says.
local function mark_all(only_missing, pick)
    local rows, err = mysql.query("SELECT item_id, stock_initial, limit_per_user, starts_at, ends_at, armed_at, "
        .. "admission FROM items")
    if rows == nil then
        return nil, "mysql: " .. tostring(err)
    end
    pick = pick or function()
        return only_missing
    end
    local by_mode, marked = { [true] = {}, [false] = {} }, 0
    for _, r in ipairs(rows) do
        local mode = pick(r)
        if mode ~= nil then
            table.insert(by_mode[mode], r)
        end
    end
    for _, mode in ipairs { true, false } do
        local n, merr = mark_rows(by_mode[mode], mode and "1" or "0")
        if n == nil then
            return nil, merr
        end
        marked = marked + n
    end
    return stamp_marked(marked)
end
M.rows, M.stamp, M.all = mark_rows, stamp_marked, mark_all

return M
