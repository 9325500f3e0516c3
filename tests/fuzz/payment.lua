-- tests/fuzz/payment.lua: the payment webhook and the cancel under a fuzzer (tests/fuzz/payment.c), with the real
-- scripts: payments.lua's callback and life/payments.lua's signature check, orders.lua's cancel. Nothing here reaches
-- a backend: the VM has no MySQL pool and this is no request's coroutine, so the first MySQL call raises ("mysql: no
-- connection pool on this thread", or "cannot yield here" for one that would wait), the one error expected where a
-- handler promises to go that far; any other error, or a backend reached where a refusal was due, is a finding.
--
-- What is asserted, for each input (the Seckill-Signature value and the raw body):
--   1. the callback with the fuzzed header: 401 bad_signature, no backend (the fuzzer cannot sign); verify() is false
--      and says why (missing, malformed, stale, forged); with the header's t made current, malformed or forged;
--   2. the same body signed by the harness (config.payment_secret, harness.c; the current time): a 400 bad_request
--      with a message exactly when the body is not a JSON object with a valid payment_id and order_id and a whole
--      amount in [0, 2^53], else MySQL; verify() of it is true, false with a byte of the body flipped, false when
--      stale, true with another v1 before the good one (the provider rotating its secret);
--   3. the body through the cancel, the order id valid and then invalid: 400 for a body that is not an object with
--      a valid user_id, else MySQL for the valid id and 404 unknown_order for the invalid one.
local payments = require "payments"
local life_payments = require "life.payments"
local orders = require "orders"

local verify = life_payments.verify
local SECRET = config.payment_secret
local TOLERANCE_MS = 5 * 60 * 1000
local WHY = { missing = true, malformed = true, stale = true, forged = true }
local ORDER_ID, BAD_ORDER_ID = "fuzz0.order-1", "no such/order"

assert(life_payments.configured() and type(SECRET) == "string", "harness.c sets SECKILLD_PAYMENT_SECRET")

local function expect_no_mysql(ok, err, ...)
    if not ok then
        local e = tostring(err)
        assert(e:find("no connection pool on this thread", 1, true) or e:find("cannot yield here", 1, true), e)
    end
    return ok, err, ...
end

-- a copy of the request as seckilld would have built it with these headers and route params (req:json() not cached)
local function with(req, headers, params)
    local r = setmetatable({}, getmetatable(req))
    for k, v in pairs(req) do
        if k ~= "_json" then
            r[k] = v
        end
    end
    r.headers, r.params = headers, params
    return r
end

local function assert_400(ok, status, answer, what)
    assert(ok and status == 400 and type(answer) == "table" and answer.error == "bad_request"
        and type(answer.message) == "string" and answer.message ~= "",
        what .. ": status " .. tostring(status) .. " " .. tostring(type(answer) == "table" and answer.error or answer))
end

-- the promises' own reading of the body, apart from common.lua's: a JSON object is a text starting with "{"
-- that decodes; ids are 1-64 of A-Za-z0-9_.:-; an amount is a whole number of minor units in [0, 2^53]
local function object_of(body)
    if not body:find("^[ \t\n\r]*{") then
        return nil
    end
    local ok, v = pcall(json.decode, body)
    return ok and type(v) == "table" and v or nil
end

local function id_ok(s)
    return type(s) == "string" and #s >= 1 and #s <= 64 and not s:find("[^A-Za-z0-9_.:%-]")
end

local function amount_ok(a)
    if math.type(a) == "integer" then
        return a >= 0 and a <= 2 ^ 53
    end
    return math.type(a) == "float" and a == a and a >= 0 and a <= 2 ^ 53 and math.floor(a) == a
end

local function sign(t, body, secret)
    return crypto.hmac_sha256(secret or SECRET, t .. "." .. body)
end

return function(req)
    local body = req.body
    local header = req.headers["seckill-signature"]

    -- 1. as it came: refused before anything is read or looked up
    local ok, status, answer = pcall(payments.callback, req)
    assert(ok, "an unsigned callback raised (reached a backend?): " .. tostring(status))
    assert(status == 401 and type(answer) == "table" and answer.error == "bad_signature", "status " .. tostring(status))
    local now_ms = math.floor(now())
    local good, why = verify(header, body, now_ms)
    assert(good == false and WHY[why], "verify: " .. tostring(good) .. " " .. tostring(why))
    if header ~= nil then
        -- its t made current: the MAC (or the header's shape) is what refuses it
        good, why = verify((header:gsub("t=%d+", "t=" .. now_ms)), body, now_ms)
        assert(good == false and (why == "malformed" or why == "forged"),
            "verify (fresh t): " .. tostring(good) .. " " .. tostring(why))
    end

    -- 2. signed by the harness: the body decides
    local t = math.floor(now())
    local mac = sign(t, body)
    local signed = "t=" .. t .. ",v1=" .. mac
    assert(verify(signed, body, t) == true, "a properly signed callback does not verify")
    assert(verify("t=" .. t .. ",v1=" .. mac:upper(), body, t) == true, "upper-case hex refused")
    local flipped
    if #body == 0 then
        flipped = "x"
    else
        local i = (#body + 1) // 2
        flipped = body:sub(1, i - 1) .. string.char(body:byte(i) ~ 1) .. body:sub(i + 1)
    end
    good, why = verify(signed, flipped, t)
    assert(good == false and why == "forged", "a flipped body byte: " .. tostring(good) .. " " .. tostring(why))
    good, why = verify(signed, body, t + TOLERANCE_MS + 1)
    assert(good == false and why == "stale", "a stale t: " .. tostring(good) .. " " .. tostring(why))
    assert(verify("t=" .. t .. ",v1=" .. sign(t, body, SECRET .. "-old") .. ",v1=" .. mac, body, t) == true,
        "a good v1 after another one is refused")

    local obj = object_of(body)
    local valid = obj ~= nil and id_ok(obj.payment_id) and id_ok(obj.order_id) and amount_ok(obj.amount)
    ok, status, answer = expect_no_mysql(pcall(payments.callback,
        with(req, { ["content-type"] = "application/json", ["seckill-signature"] = signed }, {})))
    if valid then
        assert(not ok, "a valid signed payment did not reach MySQL: " .. tostring(status) .. " "
            .. tostring(type(answer) == "table" and answer.message or answer))
    else
        assert_400(ok, status, answer, "a signed payment that is not valid")
    end

    -- 3. the cancel: the body's user_id, then the order id
    local user_ok = obj ~= nil and id_ok(obj.user_id)
    ok, status, answer = expect_no_mysql(pcall(orders.cancel, with(req, req.headers, { order_id = ORDER_ID })))
    if user_ok then
        assert(not ok, "a valid cancel did not reach MySQL: " .. tostring(status))
    else
        assert_400(ok, status, answer, "a cancel without a valid user_id")
    end
    ok, status, answer = expect_no_mysql(pcall(orders.cancel, with(req, req.headers, { order_id = BAD_ORDER_ID })))
    if user_ok then
        assert(ok and status == 404 and type(answer) == "table" and answer.error == "unknown_order",
            "a cancel of an invalid order id: " .. tostring(status))
    else
        assert_400(ok, status, answer, "a cancel without a valid user_id (invalid order id)")
    end
end
