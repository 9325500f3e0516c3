-- buy.lua: POST /seckill/add. Validate, take stock in Redis (two strategies), put the order on Kafka, answer.
-- Window, limit and stock are checked before anything is spent; if Kafka refuses the order, a compensating
-- script gives the stock and the user's count back before the 503 (books.lua).
local common = require "common"
local books = require "books"
local K = common.keys

local M = {}

local strategy = config.strategy or "watch"
if strategy ~= "watch" and strategy ~= "eval" then
    error("config.strategy must be \"watch\" or \"eval\", got " .. tostring(strategy))
end
M.strategy = strategy

local topic = config.kafka and config.kafka.topic or "seckill.orders"
local tries = config.redis and config.redis.tries or 16
local sale_conf = config.sale or {}

-- the decision, shared by both strategies' callers: nil when the buy may go ahead, else the refusal
local function decide(meta_limit, starts_at, ends_at, stock, bought, quantity, now_ms, rebuilding, epoch)
    if meta_limit == nil then
        return epoch and "unknown_item" or "lost" -- no epoch: Redis lost its data, and with it the item
    end
    if rebuilding then
        return "rebuilding"
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

-- the order as stored in Redis (status; the queued set holds it until it is in MySQL) and sent to Kafka
local function order_fields(order)
    return "item_id", order.item_id, "user_id", order.user_id, "quantity", order.quantity,
        "status", "queued", "created_at", order.created_at
end

-- After a Redis failure we cannot tell from the reply whether the writes were applied (the connection may have
-- broken after EXEC or EVALSHA went out). The order's own key says: present means the stock was taken and the
-- order must go on to Kafka like any other. Returns true (recorded), false (not), or nil (still cannot tell).
local function recorded(order)
    for attempt = 1, 3 do
        local status, err = redis.call("HGET", K.order(order.order_id), "status")
        if status ~= nil or err == nil then
            return status == "queued"
        end
        sleep(50 * attempt)
    end
    log.error("outcome unknown for order " .. order.order_id .. " (item " .. order.item_id
        .. "): Redis failed around its transaction and cannot be asked; its stock may be held")
    return nil
end

-- ===== strategy "watch": an optimistic transaction retried by the core =====
-- Buys of one item on one worker coalesce: while a transaction for the item is in flight, newcomers queue, and the
-- next transaction decides for all of them at once (one WATCH, one MULTI/EXEC for up to batch_max buyers). Each
-- worker then runs one transaction per item at a time, so conflicts only come from other workers, and a hot item
-- costs two Redis round trips per batch instead of per buyer. Each buyer still puts its own order on Kafka.
local BATCH_MAX = math.tointeger(sale_conf.batch_max) or 256
local QUEUE_WAIT_MS = math.tointeger(sale_conf.queue_wait_ms) or 3000
local lanes = {} -- item -> { queue = { entries } } while a transaction for it is in flight; this worker's VM

-- decides every entry against one snapshot of the item and writes the accepted ones; sets entry fields
local function run_batch(item, entries)
    local users = {}
    for i, e in ipairs(entries) do
        users[i] = e.order.user_id
    end
    local res, err = redis.optimistic {
        watch = { K.stock(item), K.meta(item) },
        read = {
            { "GET", K.stock(item) },
            { "HMGET", K.meta(item), "limit_per_user", "starts_at", "ends_at", "rebuilding" },
            { "HMGET", K.users(item), table.unpack(users) },
            { "GET", K.epoch },
        },
        tries = tries,
        fn = function(tx, r)
            local meta, counts = r[2] or {}, r[3] or {}
            local limit = common.int_or_nil(meta[1])
            local starts_at, ends_at = common.int_or_nil(meta[2]), common.int_or_nil(meta[3])
            local stock = common.int_or_nil(r[1]) or 0
            local rebuilding, epoch = meta[4] or nil, r[4] or nil
            local bought, taken = {}, 0
            for i, e in ipairs(entries) do
                local o = e.order
                if bought[o.user_id] == nil then
                    bought[o.user_id] = common.int_or_nil(counts[i]) or 0
                end
                e.refusal = decide(limit, starts_at, ends_at, stock - taken, bought[o.user_id], o.quantity, o.created_at,
                    rebuilding, epoch)
                if e.refusal == nil then
                    taken = taken + o.quantity
                    bought[o.user_id] = bought[o.user_id] + o.quantity
                end
                e.stock_after = stock - taken
            end
            if taken == 0 then
                return true -- nothing queued: the core UNWATCHes, sends no EXEC and returns this
            end
            tx:queue("DECRBY", K.stock(item), taken)
            tx:queue("INCRBY", K.sold(item), taken)
            for _, e in ipairs(entries) do
                if e.refusal == nil then
                    tx:queue("HINCRBY", K.users(item), e.order.user_id, e.order.quantity)
                    tx:queue("HSET", K.order(e.order.order_id), order_fields(e.order))
                    tx:queue("ZADD", K.queued(item), e.order.created_at, e.order.order_id)
                end
            end
        end,
    }
    if res == nil or res == false then
        local failure = err == redis.CONFLICT and "busy" or "unavailable"
        for _, e in ipairs(entries) do
            e.refusal, e.stock_after, e.failure, e.err = nil, nil, failure, err
            -- an I/O failure (not EXECABORT, not a conflict) may have come after EXEC was applied
            if res == nil and failure == "unavailable" and e.order.quantity and recorded(e.order) then
                e.failure = nil
            end
        end
    end
end

local function lead(item, lane, me)
    local batch = { me }
    while #batch < BATCH_MAX and #lane.queue > 0 do
        local e = table.remove(lane.queue, 1)
        e.claimed = true
        batch[#batch + 1] = e
    end
    local ok, err = pcall(run_batch, item, batch)
    if not ok then
        log.error("buy batch for " .. item .. " failed: " .. tostring(err))
        for _, e in ipairs(batch) do
            e.refusal, e.stock_after, e.failure, e.err = nil, nil, "unavailable", err
        end
    end
    for i = 2, #batch do
        batch[i].sema:post()
    end
    -- hand the item to the next in line, or free it
    if #lane.queue > 0 then
        local nxt = table.remove(lane.queue, 1)
        nxt.lead = true
        nxt.sema:post()
    else
        lanes[item] = nil -- idle: a lane exists only while its item has a transaction in flight
    end
end

local function take_watch(order)
    local item = order.item_id
    local lane = lanes[item]
    local me = { order = order }
    if lane ~= nil then
        me.sema = semaphore.new(0)
        lane.queue[#lane.queue + 1] = me
        local woke = me.sema:wait(QUEUE_WAIT_MS)
        if not me.lead and not me.claimed then
            if not woke then
                for i, e in ipairs(lane.queue) do
                    if e == me then
                        table.remove(lane.queue, i)
                        break
                    end
                end
                return nil, "busy", "waited too long for the item"
            end
        elseif me.claimed and not woke then
            me.sema:wait() -- our batch is in flight: its outcome is on the way
        end
        if me.claimed then
            if me.failure then
                return nil, me.failure, me.err
            end
            return me.refusal, me.stock_after
        end
    else
        lane = { queue = {} }
        lanes[item] = lane
    end
    lead(item, lane, me)
    if me.failure then
        return nil, me.failure, me.err
    end
    return me.refusal, me.stock_after
end

-- ===== strategy "eval": the same checks and writes in one Redis-side script =====
local TAKE_SCRIPT = [[
local meta = redis.call("HMGET", KEYS[4], "limit_per_user", "starts_at", "ends_at", "rebuilding")
local limit = tonumber(meta[1])
if not limit then
    if redis.call("EXISTS", KEYS[7]) == 0 then return {"lost", 0} end
    return {"unknown_item", 0}
end
if meta[4] then return {"rebuilding", 0} end
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
redis.call("ZADD", KEYS[6], ARGV[3], ARGV[4])
return {"ok", stock - q}
]]

local function take_eval(order)
    local item = order.item_id
    local res, err = redis.evalsha(TAKE_SCRIPT,
        { K.stock(item), K.users(item), K.sold(item), K.meta(item), K.order(order.order_id), K.queued(item), K.epoch },
        { order.user_id, order.quantity, order.created_at, order.order_id, item })
    if type(res) ~= "table" then
        if res == nil and recorded(order) then
            return nil, nil -- the script ran before the connection broke: the order stands
        end
        return nil, "unavailable", err
    end
    if res[1] == "ok" then
        return nil, res[2]
    end
    return res[1], res[2]
end

local REFUSALS = {
    unknown_item = { 404, "unknown_item", "no such item" },
    not_started = { 403, "not_started", "the sale has not started" },
    ended = { 403, "ended", "the sale has ended" },
    quantity_over_limit = { 400, "bad_request", "quantity exceeds the item's limit per user" },
    limit_exceeded = { 409, "limit_exceeded", "this user already bought the limit of this item" },
    sold_out = { 409, "sold_out", "not enough stock left" },
    lost = { 503, "unavailable", "redis lost its data; the item is being rebuilt" },
    rebuilding = { 503, "unavailable", "the item is being rebuilt after redis lost data; retry shortly" },
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
    if stock_after == 0 and (refusal == nil or refusal == "sold_out") then
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
        if books.compensate(order) ~= "stands" then
            return common.unavailable("the order queue is unavailable; nothing was taken")
        end
    end
    return 200, {
        ok = true, order_id = order.order_id, item_id = item, user_id = user, quantity = quantity, status = "queued",
    }
end

return M
