-- life/release.lua: a cancelled or expired order's units back on sale, exactly once (life/init.lua says why it is
-- safe). Its stock bucket's stock, sold and the user's count move back in one Redis script guarded by the order's
-- release marker (redis/release.lua); a bucketed item's parts go back to their buckets first, each guarded by its
-- record (redis/release_part.lua); then the row says `released = 1`.
--
--   release.orders(rows)   releases these final orders (rows of MySQL's `orders`: order_id, item_id, user_id,
--                          quantity, created_ms) → true, or nil and an error (what was done stays done)
--   release.pass(limit)    releases up to `limit` final orders MySQL has not seen released → how many, or nil and an
--                          error
local common = require "common"
local B = require "common.buckets"
local items = require "common.items"
local K = common.keys
local S = common.settings

local M = {}

local RELEASE = common.redis_script("release")
local RELEASE_PART = common.redis_script("release_part")
local CHUNK = 200 -- orders per script call

M.released_units = metrics.counter("seckilld_units_released_total")

-- gives back the parts other buckets gave a bucketed item's order (its hash lists them), before the order itself:
-- true, false when a part's bucket is being rebuilt (the order waits), or nil and an error. An order whose release
-- marker is there already (released, or left out of a rebuild's count) has nothing to give back, parts included; a
-- part of a bucket the item no longer has, or armed after the order, was not this sale's (redis/release_part.lua).
local function release_parts(row, k)
    local r, err = redis.pipeline(function(p)
        p:call("EXISTS", K.released(row.order_id))
        p:call("HGET", K.order(row.order_id), "parts")
    end)
    if r == nil then
        return nil, "redis: " .. tostring(err)
    end
    if r[1][1] == 1 then
        return true
    end
    for _, part in ipairs(B.decode_parts(r[2][1])) do
        if part.b < k then
            local tag = B.tag(row.item_id, part.b)
            local res, perr = redis.evalsha(RELEASE_PART, { K.stock(tag), K.sold(tag), K.parts(tag),
                K.part(tag, row.order_id), K.meta(tag) },
                { row.order_id, part.units, S.tombstone_ttl_s, math.tointeger(row.created_ms) or 0 })
            if res == -1 then
                return false
            elseif res == nil or res == false then
                return nil, "redis: " .. tostring(perr)
            end
            M.released_units(res)
        end
    end
    return true
end

-- one call for orders of one bucket: the ids done (released now or before) are added to `done`
local function release_in(tag, rows, done)
    local keys, args = { K.stock(tag), K.users(tag), K.sold(tag), K.meta(tag) }, { S.tombstone_ttl_s }
    for _, row in ipairs(rows) do
        keys[#keys + 1] = K.order(row.order_id)
        keys[#keys + 1] = K.released(row.order_id)
        args[#args + 1] = row.order_id
        args[#args + 1] = row.user_id
        args[#args + 1] = math.tointeger(row.quantity)
        args[#args + 1] = math.tointeger(row.created_ms) or 0
    end
    local res, err = redis.evalsha(RELEASE, keys, args)
    if type(res) ~= "table" then
        return nil, "redis: " .. tostring(err)
    end
    local waiting
    for i, row in ipairs(rows) do
        local r = res[i]
        if r == -1 then
            waiting = true -- being rebuilt, or its keys are gone: later
        else
            done[#done + 1] = row.order_id
            if r ~= 0 then
                M.released_units(math.tointeger(row.quantity))
                shared.delete(common.soldout_key(row.item_id)) -- units are back: sell them (other processes: ≤ 1 s)
            end
        end
    end
    return true, waiting
end

-- releases `rows` in Redis; returns the ids done, or nil and an error
local function release_redis(rows)
    local by_tag, tags, done = {}, {}, {}
    for _, row in ipairs(rows) do
        local s, serr = items.get(row.item_id)
        if s == nil then -- which bucket the order is in is unknown: nothing is released on a guess
            return nil, "redis: " .. tostring(serr)
        end
        local k = s and s.buckets or 1
        local tag = B.tag(row.item_id, B.of_user(row.user_id, k))
        if s == false then
            -- no meta (a loss the watcher has not marked yet, or a key deleted): left for a later pass
        elseif redis.cluster and redis.slot(K.order(row.order_id)) ~= redis.slot(K.stock(tag)) then
            -- an order of an earlier layout (an id without its bucket's token, or a set-up with other buckets since):
            -- its units are not in one slot with it; left for an operator, and not retried every round
            log.warn("order " .. row.order_id .. " of " .. row.item_id .. " is not in its stock's slot; its units "
                .. "are not released (an order of an earlier set-up)")
            done[#done + 1] = row.order_id
        else
            local ok, err = true, nil
            if k > 1 then
                ok, err = release_parts(row, k)
                if ok == nil then
                    return nil, err
                end
            end
            if ok then -- else a part's bucket is being rebuilt: the order waits, whole
                if by_tag[tag] == nil then
                    by_tag[tag] = {}
                    tags[#tags + 1] = tag
                end
                table.insert(by_tag[tag], row)
            end
        end
    end
    for _, tag in ipairs(tags) do
        local list = by_tag[tag]
        for i = 1, #list, CHUNK do
            local ok, err = release_in(tag, table.move(list, i, math.min(i + CHUNK - 1, #list), 1, {}), done)
            if not ok then
                return nil, err
            end
        end
    end
    return done
end

-- `released = 1` for these ids (one statement)
local function mark(ids)
    if #ids == 0 then
        return true
    end
    local marks = {}
    for i = 1, #ids do
        marks[i] = "?"
    end
    local r, err = mysql.query("UPDATE orders SET released = 1 WHERE order_id IN (" .. table.concat(marks, ",")
        .. ") AND status IN ('cancelled', 'expired')", table.unpack(ids))
    if r == nil then
        return nil, "mysql: " .. tostring(err)
    end
    return true
end

function M.orders(rows)
    local done, err = release_redis(rows)
    if done == nil then
        return nil, err
    end
    return mark(done)
end

-- Rows that cannot be released yet (their item is being rebuilt) must not hide the others from a pass: each pass
-- goes on from the last order id the previous one saw, and starts over once it reaches the end. The rows are found by
-- the index on status, released, expires_at and sorted (they are few but in a mass expiry); without FORCE INDEX the
-- optimizer walks the primary key in order instead, the whole table (3.5 s of a 100,000-order mass expiry's release).
local after = ""

function M.pass(limit)
    local rows, err = mysql.query("SELECT order_id, item_id, user_id, quantity, "
        .. "CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED) AS created_ms FROM orders FORCE INDEX (idx_orders_life) "
        .. "WHERE released = 0 AND status IN ('cancelled', 'expired') AND order_id > ? ORDER BY order_id LIMIT ?",
        after, limit)
    if rows == nil then
        return nil, "mysql: " .. tostring(err)
    end
    after = #rows < limit and "" or rows[#rows].order_id
    if #rows == 0 then
        return 0
    end
    local done, rerr = release_redis(rows)
    if done == nil then
        return nil, rerr
    end
    local ok, merr = mark(done)
    if not ok then
        return nil, merr
    end
    return #done, #rows
end

return M
