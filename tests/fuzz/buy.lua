-- tests/fuzz/buy.lua: the buy's reading of a request under a fuzzer (tests/fuzz/buy.c), with the real scripts: the
-- handler itself (buy.lua) up to its first backend call, then the purchase token and Idempotency-Key checks it
-- reaches after one. Nothing here reaches a backend: the VM has no Redis and this is no request's coroutine, so the
-- first redis call raises ("redis is not available on this thread", or "cannot yield here" for one that would wait),
-- the one error expected; any other error is a finding.
local buy = require "buy"
local request = require "sale.request"
local tokens = require "admission.tokens"
local idempotency = require "admission.idempotency"
local common = require "common"

local function expect_no_redis(ok, err, ...)
    if not ok then
        local e = tostring(err)
        assert(e:find("redis is not available on this thread", 1, true) or e:find("cannot yield here", 1, true), e)
    end
    return ok, err, ...
end

return function(req)
    -- the handler as the route runs it: a refusal (400) or the first backend call
    local ok, status, body = expect_no_redis(pcall(buy.handle, req))
    if ok then
        assert(status == 400 and type(body) == "table" and body.error == "bad_request", "status " .. tostring(status))
    end

    local order, err, token = request.order(req)
    if order == nil then
        assert(type(err) == "string")
        assert(not ok or body.message == err)
        return
    end
    assert(not ok, "a valid order was refused: " .. tostring(body and body.message))
    assert(common.valid_id(order.item_id) and common.valid_id(order.user_id))
    assert(math.type(order.quantity) == "integer" and order.quantity >= 1 and order.quantity <= 1000000000)

    -- the purchase token: only "missing", "malformed", "expired" or "forged" (the fuzzer cannot sign one)
    local good, why = tokens.verify(token, order.item_id, order.user_id)
    assert(good == false and (why == "missing" or why == "malformed" or why == "expired" or why == "forged"), why)
    -- one the server issued for this order is good, and not for another user
    local issued = tokens.issue(order.item_id, order.user_id, 60000)
    assert(tokens.verify(issued, order.item_id, order.user_id) == true)
    assert(tokens.verify(issued, order.item_id, order.user_id .. "x") == false)

    -- the Idempotency-Key: a malformed one is refused before anything is taken; a good one reaches Redis
    order.tag = order.item_id
    local iok, claim, istatus, ibody = expect_no_redis(pcall(idempotency.claim, req, order))
    local key = req.headers["idempotency-key"]
    if key == nil then
        assert(iok and claim ~= nil and claim.step == "take" and claim.record == nil)
    elseif common.valid_id(key) then
        assert(not iok, "a good Idempotency-Key did not reach Redis")
        assert(order.order_id:find("^[0-9a-z]+%.k%x+$"), order.order_id)
    else
        assert(iok and claim == nil and istatus == 400 and ibody.error == "bad_request")
    end
end
