-- buy.lua: POST /seckill/add — the flash sale's buy, read top to bottom in M.handle: 1. validate, 2. admit, 3. take
-- the stock, 4. put the order on Kafka, 5. answer. The machinery is in admission/ (limits, tokens, Idempotency-Key),
-- sale/ (the take: strategies, coalescing, the hold) and books/ (compensation).
-- Edit freely: the stock taken is a hold that gives itself back unless committed, so no error path strands it.
local common = require "common"
local stock = require "sale.stock"
local admission = require "admission"
local idempotency = require "admission.idempotency"
local request = require "sale.request"
local items = require "common.items"

local M = {}

local topic = config.kafka.topic

local take, deliver, accepted -- steps 3 and 4 and the 200 answer, below the flow

function M.handle(req)
    -- 1. validate: the order the body asks for
    local order, err, token = request.order(req)
    if order == nil then
        return common.bad_request(err)
    end
    req:annotate { item_id = order.item_id, user_id = order.user_id } -- for the access log, when it is on

    -- 2. admit: rate limits and the purchase token (nothing is taken when refused)
    local status, body, headers = admission.admit(req, order.item_id, order.user_id, token, true)
    if status then
        return status, body, headers
    end
    -- most buyers of a flash sale are refused: an item this process knows is sold out refuses a buy at once, unless the
    -- buy has an Idempotency-Key (a retry is owed its first answer, perhaps an order)
    if req:header("idempotency-key") == nil and stock.sold_out(order.item_id) then
        return request.refuse("sold_out", order)
    end
    -- where it is taken (the user's stock bucket) and its id, which carries that place's slot token: the order's key
    -- lives beside the stock it takes (common.keys.order)
    local placed, perr = stock.place(order)
    if not placed then
        return common.unavailable("redis is unavailable: " .. tostring(perr) .. "; nothing was taken")
    end
    -- an Idempotency-Key makes a retry safe: a repeat gets the first answer and takes nothing again, or goes on where
    -- the first request stopped (claim.step)
    local claim
    claim, status, body, headers = idempotency.claim(req, order)
    if claim == nil then
        return status, body, headers
    end

    -- 3. take the stock (window, limit and stock are checked first; a refusal takes nothing): nil and the answer when
    -- there is nothing to deliver
    local hold <close>, refused, why = take(order, claim) -- given back by itself unless committed
    status, body = refused, why

    -- 4. put the order on Kafka: the answer is 200 only once Kafka has it (delivery report)
    if hold then
        status, body = deliver(order, hold)
    end

    -- 5. answer, recorded for the Idempotency-Key's repeats
    status, body, headers = idempotency.finish(claim, order, status, body)
    if status == 200 then
        req:annotate { order_id = order.order_id }
    end
    return status, body, headers
end

-- 3. the hold of the order's stock, or nil and the answer
function take(order, claim)
    if claim.step == "deliver" then
        return stock.adopt(order) -- an earlier request with this key took it and did not see the order through
    elseif claim.step == "delivered" then
        return nil, accepted(order) -- the consumer has the order: it was delivered after all
    end
    if order.unlisted then -- on no process's list of items: a made-up id (common/items.lua)
        return nil, request.refuse("unknown_item", order)
    end
    if stock.sold_out(order.item_id) then
        return nil, request.refuse("sold_out", order)
    end
    local took = stock.take(order)
    if took.failure then
        log.warn("buy of " .. order.item_id .. " failed: " .. tostring(took.err))
        return nil, request.refuse(took.failure, order)
    elseif took.refusal then
        return nil, request.refuse(took.refusal, order)
    end
    return took.hold
end

-- 4. the order on Kafka, or its stock given back
function deliver(order, hold)
    local message = json.encode {
        order_id = order.order_id, item_id = order.item_id, user_id = order.user_id, quantity = order.quantity,
        created_at = order.created_at,
        -- its deadline, from the settings stock.place read (created_at may be an earlier request's: Idempotency-Key)
        expires_at = items.expires_at(order.settings, order.created_at), -- nil without a payment step
        bucket = order.bucket ~= 0 and order.bucket or nil, -- where its queued set is (common/buckets.lua)
    }
    local partition, perr = kafka.produce(topic, message, { key = order.order_id })
    if partition == nil then
        log.warn("kafka refused order " .. order.order_id .. ": " .. tostring(perr) .. "; compensating")
        if hold:release() ~= "stands" then
            return common.unavailable("the order queue is unavailable; nothing was taken")
        end
    end
    hold:commit()
    return accepted(order)
end

-- the 200 answer, the one place it is written: the order is queued
function accepted(order)
    return 200, {
        ok = true, order_id = order.order_id, item_id = order.item_id, user_id = order.user_id,
        quantity = order.quantity, status = "queued",
    }
end

return M
