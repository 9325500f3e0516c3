-- consumer.lua: runs on the Kafka consumer's thread with batches of order messages. Returns true when every order
-- of the batch is in MySQL; the core commits the offsets only then (at-least-once), and the primary key on
-- order_id makes a redelivered order a no-op (exactly once in the table).
local common = require "common"
local K = common.keys

-- marks each order "persisting" unless it is gone (compensated: Kafka's report failed but the message arrived
-- anyway); a compensation that comes later sees the mark and lets the order stand
local CLAIM_SCRIPT = [[
local out = {}
for i, key in ipairs(KEYS) do
    local status = redis.call("HGET", key, "status")
    if status == "queued" then
        redis.call("HSET", key, "status", "persisting")
        out[i] = 1
    elseif status then
        out[i] = 1
    else
        out[i] = 0
    end
end
return out
]]

return function(batch)
    local orders, keys = {}, {}
    for _, msg in ipairs(batch) do
        local ok, order = pcall(json.decode, msg.value)
        if ok and type(order) == "table" and common.valid_id(order.order_id) and common.valid_id(order.item_id)
            and common.valid_id(order.user_id) and math.type(math.tointeger(order.quantity)) == "integer" then
            orders[#orders + 1] = order
            keys[#keys + 1] = K.order(order.order_id)
        else
            log.error("skipping malformed order message at " .. tostring(msg.partition) .. ":" .. tostring(msg.offset))
        end
    end
    if #orders == 0 then
        return true
    end

    local claimed, err = redis.evalsha(CLAIM_SCRIPT, keys, {})
    if type(claimed) ~= "table" then
        return nil, "redis: " .. tostring(err)
    end

    local values, args = {}, {}
    for i, order in ipairs(orders) do
        if claimed[i] == 1 then
            values[#values + 1] = "(?, ?, ?, ?, 'created', FROM_UNIXTIME(? / 1000))"
            local n = #args
            args[n + 1], args[n + 2], args[n + 3] = order.order_id, order.item_id, order.user_id
            args[n + 4], args[n + 5] = math.tointeger(order.quantity), math.tointeger(order.created_at) or 0
        else
            log.warn("order " .. order.order_id .. " was compensated before it reached the consumer; not persisted")
        end
    end
    if #values > 0 then
        local res, merr = mysql.query("INSERT INTO orders (order_id, item_id, user_id, quantity, status, created_at) VALUES "
            .. table.concat(values, ", ") .. " ON DUPLICATE KEY UPDATE order_id = order_id", table.unpack(args))
        if res == nil then
            return nil, "mysql: " .. tostring(merr)
        end
    end

    local _, perr = redis.pipeline(function(p)
        for i, key in ipairs(keys) do
            if claimed[i] == 1 then
                p:call("HSET", key, "status", "created")
            end
        end
    end)
    if perr then
        -- the rows are in; the next delivery of this batch (if any) or a lookup in MySQL settles it
        log.warn("could not mark orders created in redis: " .. tostring(perr))
    end
    return true
end
