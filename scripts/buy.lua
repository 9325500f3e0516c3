-- buy.lua: POST /seckill/add. Validate, take stock in Redis (two strategies), put the order on Kafka, answer.
-- Window, limit and stock are checked before anything is spent; if Kafka refuses the order, a compensating
-- script gives the stock and the user's count back before the 503.
local common = require "common"
local K = common.keys

local M = {}

local strategy = config.strategy or "watch"
if strategy ~= "watch" and strategy ~= "eval" then
    error("config.strategy must be \"watch\" or \"eval\", got " .. tostring(strategy))
end
M.strategy = strategy

local topic = config.kafka and config.kafka.topic or "seckill.orders"
local tries = config.redis and config.redis.tries or 16

-- the decision, shared by both strategies' callers: nil when the buy may go ahead, else the refusal
local function decide(meta_limit, starts_at, ends_at, stock, bought, quantity, now_ms)
    if meta_limit == nil then
        return "unknown_item"
    end
    if starts_at ~= nil and now_ms < starts_at then
        return "not_started"
    end
    if ends_at ~= nil and now_ms >= ends_at then
        return "ended"
    end
    if quantity > meta_limit then
        return "quantity_over_limit"
    end
    if bought + quantity > meta_limit then
        return "limit_exceeded"
    end
    if stock < quantity then
        return "sold_out"
    end
    return nil
end

-- the order as stored in Redis (status) and sent to Kafka
local function order_fields(order)
    return "item_id", order.item_id, "user_id", order.user_id, "quantity", order.quantity,
        "status", "queued", "created_at", order.created_at
end

-- ===== strategy "watch": an optimistic transaction retried by the core =====
local function take_watch(order)
    local item, user, q = order.item_id, order.user_id, order.quantity
    local refusal, stock_after
    local res, err = redis.optimistic {
        watch = { K.stock(item) },
        read = {
            { "GET", K.stock(item) },
            { "HGET", K.users(item), user },
            { "HMGET", K.meta(item), "limit_per_user", "starts_at", "ends_at" },
        },
        tries = tries,
        -- one transaction per item at a time on each worker: the others wait on the loop instead of piling on
        -- the same WATCH and conflicting (a hot item would otherwise spend most attempts on conflicts)
        gate = true,
        fn = function(tx, r)
            local meta = r[3] or {}
            local stock = common.int_or_nil(r[1]) or 0
            refusal = decide(common.int_or_nil(meta[1]), common.int_or_nil(meta[2]), common.int_or_nil(meta[3]),
                stock, common.int_or_nil(r[2]) or 0, q, order.created_at)
            stock_after = stock - q
            if refusal then
                stock_after = stock
                return true -- nothing queued: the core UNWATCHes, sends no EXEC and returns this
            end
            tx:queue("DECRBY", K.stock(item), q)
            tx:queue("HINCRBY", K.users(item), user, q)
            tx:queue("INCRBY", K.sold(item), q)
            tx:queue("HSET", K.order(order.order_id), order_fields(order))
        end,
    }
    if res == nil then
        return nil, (err == redis.CONFLICT or err == "busy") and "busy" or "unavailable", err
    end
    return refusal, stock_after
end

-- ===== strategy "eval": the same checks and writes in one Redis-side script =====
local TAKE_SCRIPT = [[
local meta = redis.call("HMGET", KEYS[4], "limit_per_user", "starts_at", "ends_at")
local limit = tonumber(meta[1])
if not limit then return {"unknown_item", 0} end
local now, q = tonumber(ARGV[3]), tonumber(ARGV[2])
local starts, ends = tonumber(meta[2]), tonumber(meta[3])
if starts and now < starts then return {"not_started", 0} end
if ends and now >= ends then return {"ended", 0} end
if q > limit then return {"quantity_over_limit", 0} end
local stock = tonumber(redis.call("GET", KEYS[1]) or "0")
local bought = tonumber(redis.call("HGET", KEYS[2], ARGV[1]) or "0")
if bought + q > limit then return {"limit_exceeded", stock} end
if stock < q then return {"sold_out", stock} end
redis.call("DECRBY", KEYS[1], q)
redis.call("HINCRBY", KEYS[2], ARGV[1], q)
redis.call("INCRBY", KEYS[3], q)
redis.call("HSET", KEYS[5], "item_id", ARGV[5], "user_id", ARGV[1], "quantity", q, "status", "queued",
           "created_at", ARGV[3])
return {"ok", stock - q}
]]

local function take_eval(order)
    local item = order.item_id
    local res, err = redis.evalsha(TAKE_SCRIPT,
        { K.stock(item), K.users(item), K.sold(item), K.meta(item), K.order(order.order_id) },
        { order.user_id, order.quantity, order.created_at, order.order_id, item })
    if type(res) ~= "table" then
        return nil, "unavailable", err
    end
    if res[1] == "ok" then
        return nil, res[2]
    end
    return res[1], res[2]
end

-- gives back what a failed order took; atomic and without a lease. The order's status decides: "queued" is
-- ours to undo; if the consumer already claimed it (the message reached Kafka after all, e.g. a delivery report
-- that timed out on a message the broker had) the order stands; if the key is gone it was undone already.
local COMPENSATE_SCRIPT = [[
local status = redis.call("HGET", KEYS[4], "status")
if not status then return 0 end
if status ~= "queued" then return -1 end
redis.call("DEL", KEYS[4])
redis.call("INCRBY", KEYS[1], ARGV[2])
redis.call("HINCRBY", KEYS[2], ARGV[1], -tonumber(ARGV[2]))
redis.call("INCRBY", KEYS[3], -tonumber(ARGV[2]))
return 1
]]

-- returns "restored", "stands" (the consumer has the order) or "failed"
local function compensate(order)
    local item = order.item_id
    for attempt = 1, 5 do
        local res, err = redis.evalsha(COMPENSATE_SCRIPT,
            { K.stock(item), K.users(item), K.sold(item), K.order(order.order_id) },
            { order.user_id, order.quantity })
        if res == -1 then
            return "stands"
        elseif res ~= nil and res ~= false then
            shared.delete(common.soldout_key(item))
            return "restored"
        end
        log.warn("compensation for order " .. order.order_id .. " failed (attempt " .. attempt .. "): " .. tostring(err))
        sleep(20 * attempt)
    end
    log.error("STOCK NOT RESTORED for order " .. order.order_id .. " item " .. item .. " user " .. order.user_id ..
        " quantity " .. order.quantity .. ": Redis unreachable during compensation")
    return "failed"
end

local REFUSALS = {
    unknown_item = { 404, "unknown_item", "no such item" },
    not_started = { 403, "not_started", "the sale has not started" },
    ended = { 403, "ended", "the sale has ended" },
    quantity_over_limit = { 400, "bad_request", "quantity exceeds the item's limit per user" },
    limit_exceeded = { 409, "limit_exceeded", "this user already bought the limit of this item" },
    sold_out = { 409, "sold_out", "not enough stock left" },
}

function M.handle(req)
    local body, err = common.json_object(req)
    if body == nil then
        return common.bad_request(err)
    end
    local item, user = body.item_id, body.user_id
    if not common.valid_id(item) then
        return common.bad_request("item_id must be 1-64 characters of A-Za-z0-9_.:-")
    end
    if not common.valid_id(user) then
        return common.bad_request("user_id must be 1-64 characters of A-Za-z0-9_.:-")
    end
    local quantity = 1
    if body.quantity ~= nil and body.quantity ~= json.null then
        quantity = common.whole(body.quantity, 1, 1000000000)
        if quantity == nil then
            return common.bad_request("quantity must be a whole number of at least 1")
        end
    end

    local soldout_key = common.soldout_key(item)
    if shared.get(soldout_key) then
        return common.fail(409, "sold_out", "not enough stock left")
    end

    local order = {
        order_id = uuid(), item_id = item, user_id = user, quantity = quantity,
        created_at = math.floor(now()),
    }
    local refusal, stock_after, rerr
    if strategy == "eval" then
        refusal, stock_after, rerr = take_eval(order)
    else
        refusal, stock_after, rerr = take_watch(order)
    end
    if refusal == nil and stock_after == "busy" then
        return common.fail(429, "busy", "too much contention on this item; retry")
    elseif refusal == nil and stock_after == "unavailable" then
        log.warn("redis unavailable: " .. tostring(rerr))
        return common.unavailable("redis is unavailable; nothing was taken")
    end
    if stock_after == 0 then
        shared.set(soldout_key, true, common.SOLDOUT_TTL_MS)
    end
    if refusal ~= nil then
        local r = REFUSALS[refusal]
        return common.fail(r[1], r[2], r[3])
    end

    -- the stock is taken: the answer is 200 only once Kafka has the order (delivery report)
    local partition, perr = kafka.produce(topic, json.encode(order), { key = order.order_id })
    if partition == nil then
        log.warn("kafka refused order " .. order.order_id .. ": " .. tostring(perr) .. "; compensating")
        if compensate(order) ~= "stands" then
            return common.unavailable("the order queue is unavailable; nothing was taken")
        end
    end
    return 200, {
        ok = true, order_id = order.order_id, item_id = item, user_id = user, quantity = quantity, status = "queued",
    }
end

return M
