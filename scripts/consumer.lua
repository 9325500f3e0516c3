-- consumer.lua: runs on the Kafka consumer's thread with batches of order messages. The core stores the offsets only
-- when this returns true (at least once), and the primary key on order_id makes a redelivered order a no-op
-- (exactly once in the table). The contract (bindings/README.md):
--   true          every message of the batch is done
--   nil, err      a backend failed (Redis or MySQL down, a deadlock...): the same batch is retried, with backoff,
--                 for as long as it takes; an accepted order is never dead-lettered because a backend is down
--   false, err    something in the batch can never succeed: the core retries its messages one at a time, and a
--                 single message that returns false goes to the dead-letter topic
-- Besides orders, the topic carries barriers (books/): recorded in Redis once everything before them is in MySQL.
local common = require "common"
local B = require "common.buckets"
local K = common.keys

local CLAIM_SCRIPT = common.redis_script("claim")

local CREATED_SCRIPT = common.redis_script("created")

-- MySQL errors that say the data, not the server, is at fault: retrying cannot help (everything else is transient)
local PERMANENT_ERRNO = {
    [1048] = true, -- column cannot be null
    [1264] = true, -- out of range
    [1292] = true, -- incorrect value
    [1366] = true, -- incorrect string value
    [1406] = true, -- data too long
    [1452] = true, -- foreign key
    [4025] = true, -- check constraint
}

local function order_of(msg)
    local ok, v = pcall(json.decode, msg.value or "")
    if not ok or type(v) ~= "table" then
        return nil
    end
    if type(v.barrier) == "string" and common.valid_id(v.barrier) then
        return { barrier = v.barrier }
    end
    if common.valid_id(v.order_id) and common.valid_id(v.item_id) and common.valid_id(v.user_id)
        and math.type(math.tointeger(v.quantity)) == "integer" and math.tointeger(v.quantity) > 0 then
        return v
    end
    return nil
end

-- where an order's queued set is: its item's, or its stock bucket's (the message's "bucket": common/buckets.lua)
local function bucket_tag(order)
    local b = math.tointeger(order.bucket)
    if b and b > 0 and b < B.MAX then
        return B.tag(order.item_id, b)
    end
    return order.item_id
end

-- 1, 2, ..., n
local function orders_at(n)
    local t = {}
    for i = 1, n do
        t[i] = i
    end
    return t
end

return function(batch)
    local orders, keys, barriers = {}, {}, {}
    for _, msg in ipairs(batch) do
        local order = order_of(msg)
        if order == nil then
            -- the core splits the batch and dead-letters exactly this message
            return false, "malformed order message at " .. tostring(msg.partition) .. ":" .. tostring(msg.offset)
        elseif order.barrier then
            barriers[#barriers + 1] = { order.barrier, msg.partition }
        else
            orders[#orders + 1] = order
            keys[#keys + 1] = K.order(order.order_id)
        end
    end

    -- one claim per slot on a cluster (an order's key is in its item's slot), one in all on a single Redis. A
    -- batch whose later claim fails is retried whole: claiming again is a no-op ("persisting" stays persisting)
    local claimed = {}
    for _, group in ipairs(common.by_slot(orders_at(#orders), function(i) return keys[i] end)) do
        if #group > 0 then
            local group_keys = {}
            for j, i in ipairs(group) do
                group_keys[j] = keys[i]
            end
            local res, err = redis.evalsha(CLAIM_SCRIPT, group_keys, {})
            if type(res) ~= "table" then
                return nil, "redis: " .. tostring(err)
            end
            for j, i in ipairs(group) do
                claimed[i] = res[j]
            end
        end
    end

    local values, args, created = {}, {}, {}
    for i, order in ipairs(orders) do
        if claimed[i] ~= 0 then
            values[#values + 1] = "(?, ?, ?, ?, 'created', FROM_UNIXTIME(? / 1000), ?)"
            local n = #args
            args[n + 1], args[n + 2], args[n + 3] = order.order_id, order.item_id, order.user_id
            args[n + 4], args[n + 5] = math.tointeger(order.quantity), math.tointeger(order.created_at) or 0
            args[n + 6] = math.tointeger(order.expires_at) or mysql.null -- the deadline of a payment step (life/)
            created[#created + 1] = i
            if claimed[i] == 2 then
                log.warn("order " .. order.order_id .. " of " .. order.item_id .. " has no key in redis (lost with its "
                    .. "data); persisted from its message")
                metrics.add("seckilld_orders_without_redis_key_total", 1)
            end
        else
            log.info("order " .. order.order_id .. " was compensated before it reached the consumer; not persisted")
        end
    end
    if #values > 0 then
        local res, merr, errno = mysql.query("INSERT INTO orders (order_id, item_id, user_id, quantity, status, "
            .. "created_at, expires_at) VALUES " .. table.concat(values, ", ") .. " ON DUPLICATE KEY UPDATE order_id = order_id", table.unpack(args))
        if res == nil then
            if PERMANENT_ERRNO[errno] then
                return false, "mysql: " .. tostring(merr)
            end
            return nil, "mysql: " .. tostring(merr)
        end
        -- one call per slot, as the claim (an order's key and its item's queued set share the item's slot). On a
        -- cluster an order whose key is elsewhere (an id without the item's token: made before this layout, or a
        -- message naming another item) is marked alone, and leaves its queued set in a second call.
        local apart = {}
        for _, group in ipairs(common.by_slot(created, function(i) return keys[i] end)) do
            local created_keys, created_args = {}, {}
            for _, i in ipairs(group) do
                local queued = K.queued(bucket_tag(orders[i]))
                if redis.cluster and redis.slot(queued) ~= redis.slot(keys[i]) then
                    apart[#apart + 1] = i
                else
                    created_keys[#created_keys + 1] = keys[i]
                    created_keys[#created_keys + 1] = queued
                    created_args[#created_args + 1] = orders[i].order_id
                    created_args[#created_args + 1] = common.order_ttl(orders[i].expires_at)
                end
            end
            if #created_keys > 0 then
                local _, perr = redis.evalsha(CREATED_SCRIPT, created_keys, created_args)
                if perr then
                    -- the rows are in; the sweeper settles these orders from MySQL
                    log.warn("could not mark orders created in redis: " .. tostring(perr))
                end
            end
        end
        for _, i in ipairs(apart) do
            local id = orders[i].order_id
            local _, perr = redis.evalsha(CREATED_SCRIPT, { keys[i] }, { id, common.order_ttl(orders[i].expires_at) })
            if not perr then
                _, perr = redis.call("ZREM", K.queued(bucket_tag(orders[i])), id)
            end
            if perr then
                log.warn("could not mark order " .. id .. " created in redis: " .. tostring(perr))
            end
        end
    end

    -- everything before each barrier is persisted now (one pipeline per barrier key's slot)
    for _, group in ipairs(common.by_slot(barriers, function(b) return K.barrier(b[1]) end)) do
        if #group > 0 then
            local _, berr = redis.pipeline(function(p)
                for _, b in ipairs(group) do
                    p:call("SADD", K.barrier(b[1]), b[2])
                    p:call("EXPIRE", K.barrier(b[1]), 3600)
                end
            end)
            if berr then
                return nil, "redis: " .. tostring(berr)
            end
        end
    end
    return true
end
