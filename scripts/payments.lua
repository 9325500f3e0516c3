-- payments.lua: POST /payments/callback, the payment provider's webhook (API-v1.2.md "Payment"). The signature and
-- the outcome are life/payments.lua's; this reads the request and answers.
local common = require "common"
local life = require "life"
local payments = require "life.payments"

local M = {}

local unsigned = metrics.counter("seckilld_payments_refused_total", { reason = "bad_signature" })

function M.callback(req)
    if not payments.configured() then
        return common.fail(503, "unavailable", "payments are not configured (payment_secret)")
    end
    local arrived = math.floor(now())
    local ok = payments.verify(req.headers["seckill-signature"], req.body or "", arrived)
    if not ok then
        unsigned(1)
        return common.fail(401, "bad_signature", "the Seckill-Signature header does not verify")
    end
    local body, err = common.json_object(req)
    if body == nil then
        return common.bad_request(err)
    end
    if not common.valid_id(body.payment_id) then
        return common.bad_request("payment_id must be 1-64 characters of A-Za-z0-9_.:-")
    end
    if not common.valid_id(body.order_id) then
        return common.bad_request("order_id must be 1-64 characters of A-Za-z0-9_.:-")
    end
    local amount = common.whole(body.amount, 0, 2 ^ 53)
    if amount == nil then
        return common.bad_request("amount must be a whole number of minor units")
    end
    req:annotate { order_id = body.order_id }
    local first, rerr = payments.recorded(body.payment_id)
    if first == nil then
        return common.unavailable("the payment store is unavailable: " .. tostring(rerr))
    elseif first then
        return 200, first
    end
    local row, why, ferr = life.find(body.order_id) -- a queued order is persisted first
    if row == nil then
        if why == "unknown" then
            return common.fail(404, "unknown_order", "no such order")
        end
        return common.unavailable("the order store is unavailable: " .. tostring(ferr))
    end
    local status, answer = payments.apply(body.order_id, body.payment_id, amount, arrived)
    if status == nil then
        return common.unavailable("the payment could not be recorded: " .. tostring(answer))
    elseif status == 404 then
        return common.fail(404, "unknown_order", "no such order")
    elseif status == 422 then
        return 422, { ok = false, error = "amount_mismatch", message = "amount must be price × quantity: " .. answer }
    end
    return status, answer
end

return M
