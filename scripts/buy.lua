-- buy.lua: POST /seckill/add — the flash sale's buy, top to bottom: validate, admit, take the stock, put the order
-- on Kafka, answer. The machinery is in admission/ (limits, tokens, retries), sale/stock.lua (strategies,
-- coalescing, the hold) and books/ (compensation).
-- Edit freely: the stock taken is a hold that gives itself back unless committed, so no error path strands it.
local common = require "common"
local stock = require "sale.stock"
local admission = require "admission"
local idempotency = require "admission.idempotency"
local request = require "sale.request"

local M = {}

local topic = config.kafka and config.kafka.topic or "seckill.orders"

-- 3. put the order on Kafka: the answer is 200 only once Kafka has it (delivery report)
local function deliver(order, hold)
    local message = json.encode {
        order_id = order.order_id, item_id = order.item_id, user_id = order.user_id, quantity = order.quantity,
        created_at = order.created_at,
        bucket = order.bucket ~= 0 and order.bucket or nil, -- where its queued set is (sale/buckets.lua)
    }
    local partition, perr = kafka.produce(topic, message, { key = order.order_id })
    if partition == nil then
        log.warn("kafka refused order " .. order.order_id .. ": " .. tostring(perr) .. "; compensating")
        if hold:release() ~= "stands" then
            return common.unavailable("the order queue is unavailable; nothing was taken")
        end
    end
    hold:commit()

    -- 4. answer
    return 200, {
        ok = true, order_id = order.order_id, item_id = order.item_id, user_id = order.user_id,
        quantity = order.quantity, status = "queued",
    }
end

-- 2. take the stock (window, limit and stock are checked first; a refusal takes nothing)
local function sell(order)
    if stock.sold_out(order.item_id) then
        return request.refuse("sold_out", order)
    end
    local took = stock.take(order)
    if took.failure then
        log.warn("buy of " .. order.item_id .. " failed: " .. tostring(took.err))
        return request.refuse(took.failure, order)
    elseif took.refusal then
        return request.refuse(took.refusal, order)
    end
    local hold <close> = took.hold -- given back by itself unless committed
    return deliver(order, hold)
end

function M.handle(req)
    -- 1. validate, and admit: rate limits and the purchase token (nothing is taken when refused)
    local order, err, token = request.order(req)
    if order == nil then
        return common.bad_request(err)
    end
    req:annotate { item_id = order.item_id, user_id = order.user_id } -- for the access log, when it is on
    local status, body, headers = admission.admit(req, order.item_id, order.user_id, token, true)
    if status then
        return status, body, headers
    end
    -- where it is taken (the user's stock bucket) and its id, which carries that place's slot token: the order's key
    -- lives beside the stock it takes (common.keys.order)
    local placed, perr = stock.place(order)
    if not placed then
        return common.unavailable("redis is unavailable: " .. tostring(perr) .. "; nothing was taken")
    end
    -- an Idempotency-Key makes a retry safe: a repeat gets the first answer and takes nothing again
    status, body, headers = idempotency.once(req, order, sell, deliver)
    if status == 200 then
        req:annotate { order_id = order.order_id }
    end
    return status, body, headers
end

return M
