-- life/payments.lua: the payment provider's webhook (API-v1.2.md "Payment"): its signature, and the payment applied
-- to its order once.
--
--   payments.configured()                 → whether a secret is set (config.payment_secret / SECKILLD_PAYMENT_SECRET)
--   payments.verify(header, body, now_ms) → true, or false and why ("missing", "malformed", "stale", "forged")
--   payments.recorded(payment_id)         → the first answer to this payment (a string), false, or nil and an error
--   payments.apply(order_id, payment_id, amount, arrived_ms) → status, body: the outcome, decided in one MySQL
--                                         transaction
--
-- The signature is Stripe's scheme: `Seckill-Signature: t=<unix ms>,v1=<hex HMAC-SHA256 over "<t>.<raw body>">`,
-- compared in constant time (crypto.equal), `t` within 5 minutes of this server's clock (a replayed old request is
-- refused). Several v1= may be given (the provider rotating its secret); one must verify. Rotation on our side as the
-- purchase tokens': config.payment_secret_previous is accepted until payment_secret_previous_until.
--
-- Applying a payment is one transaction that holds the order's row (FOR UPDATE): the payment's record is looked up
-- (a retry gets the first answer, byte for byte), the order decided (life/init.lua: paid if it is created and the
-- payment arrived before expires_at; else refund_due, with the order unchanged and no stock taken), and the record
-- written with the answer. Both writes commit together, so a crash leaves neither or both.
local life = require "life"

local M = {}

local secret = config.payment_secret
local previous = config.payment_secret_previous
local previous_until = config.payment_secret_previous_until
local TOLERANCE_MS = 5 * 60 * 1000

if previous ~= nil and (math.type(previous_until) ~= "integer" or secret == nil) then
    error("config.payment_secret_previous needs payment_secret and payment_secret_previous_until (ms since the epoch)")
end

M.paid = metrics.counter("seckilld_orders_paid_total")
M.refund_due = metrics.counter("seckilld_orders_refund_due_total")

function M.configured()
    return secret ~= nil
end

function M.verify(header, body, now_ms)
    if type(header) ~= "string" then
        return false, "missing"
    end
    local t, macs = nil, {}
    for part in header:gmatch("[^,]+") do
        -- v without its trailing blanks is v up to its last non-blank byte: "(.-)%s*$" would try each end and
        -- match the blanks after it, quadratic in a run of blanks (one unsigned header pinned a worker for minutes)
        local k, v = part:match("^%s*(%w+)=(.*)$")
        if k ~= nil then
            v = v:match("^.*%S") or ""
        end
        if k == "t" then
            t = v
        elseif k == "v1" and #v == 64 and v:find("^%x+$") then
            macs[#macs + 1] = v:lower()
        end
    end
    if t == nil or #t > 16 or not t:find("^%d+$") or #macs == 0 then
        return false, "malformed"
    end
    if math.abs(now_ms - math.tointeger(tonumber(t))) > TOLERANCE_MS then
        return false, "stale"
    end
    local signed = t .. "." .. body
    local good = crypto.hmac_sha256(secret, signed)
    local old = previous ~= nil and now_ms < previous_until and crypto.hmac_sha256(previous, signed) or nil
    for _, mac in ipairs(macs) do
        if crypto.equal(mac, good) or (old and crypto.equal(mac, old)) then
            return true
        end
    end
    return false, "forged"
end

function M.recorded(payment_id)
    local rows, err = mysql.query("SELECT answer FROM payments WHERE payment_id = ?", payment_id)
    if rows == nil then
        return nil, "mysql: " .. tostring(err)
    end
    return rows[1] and rows[1].answer or false
end

-- the item's price (minor units; 0: amounts are not checked), from MySQL's record of its set-up
local function price_of(tx, item)
    local rows, err = tx:query("SELECT admission FROM items WHERE item_id = ?", item)
    if rows == nil then
        error("mysql: " .. tostring(err))
    end
    local ok, a = pcall(json.decode, rows[1] and rows[1].admission or "")
    return ok and type(a) == "table" and math.tointeger(a.price) or 0
end

-- in the transaction: the answer (status, body string) and what to do after the commit
local function decide(tx, order_id, payment_id, amount, arrived)
    local rows, err = tx:query("SELECT " .. life.COLUMNS .. "WHERE order_id = ? FOR UPDATE", order_id)
    if rows == nil then
        error("mysql: " .. tostring(err))
    end
    local row = rows[1]
    if row == nil then
        return { status = 404 }
    end
    local prior
    -- a plain read (a locking one would take a gap lock that two payments' inserts deadlock on): its snapshot starts
    -- now, after the order's lock, so a payment of this order committed before is seen; the same payment_id for
    -- another order fails the insert below on the primary key, and gets the first answer (M.apply)
    prior, err = tx:query("SELECT answer FROM payments WHERE payment_id = ?", payment_id)
    if prior == nil then
        error("mysql: " .. tostring(err))
    end
    if prior[1] then
        return { status = 200, answer = prior[1].answer }
    end
    local price = price_of(tx, row.item_id)
    if price > 0 and amount ~= price * row.quantity then
        return { status = 422, expected = price * row.quantity }
    end
    -- the payment's time is when it arrived (API-v1.2.md: "arrived before its expires_at"), not after the waits
    local t, outcome, reason, after = arrived, "paid", nil, nil
    local expires = row.expires_at ~= mysql.null and row.expires_at or nil
    if row.status == "created" and (expires == nil or t < expires) then
        err = select(2, tx:query("UPDATE orders SET status = 'paid', payment_id = ?, ended_at = ? WHERE order_id = ?",
            payment_id, t, order_id))
        row.status = "paid"
    elseif row.status == "created" then -- arrived after its deadline: the expiry wins, decided here and now
        err = select(2, tx:query("UPDATE orders SET status = 'expired', ended_at = ? WHERE order_id = ?", t, order_id))
        row.status, outcome, reason, after = "expired", "refund_due", "expired", "expired"
    else
        outcome, reason = "refund_due", row.status == "paid" and "already_paid" or row.status
    end
    if err then
        error("mysql: " .. tostring(err))
    end
    local answer = json.encode { ok = true, outcome = outcome, reason = reason, order = life.view(row) }
    local res
    res, err = tx:query("INSERT INTO payments (payment_id, order_id, amount, outcome, reason, answer) "
        .. "VALUES (?, ?, ?, ?, ?, ?)", payment_id, order_id, amount, outcome, reason or mysql.null, answer)
    if res == nil then
        error("mysql: " .. tostring(err))
    end
    return { status = 200, answer = answer, outcome = outcome, after = after, row = row }
end

-- status, body (a string for a 200: the recorded answer), or nil and an error (nothing was recorded)
function M.apply(order_id, payment_id, amount, arrived)
    local ok, d
    for attempt = 1, 3 do
        ok, d = mysql.transaction(function(tx)
            return decide(tx, order_id, payment_id, amount, arrived)
        end)
        -- InnoDB chose this transaction as a deadlock's victim, or its lock wait timed out: nothing was written
        if ok or not tostring(d):find("Deadlock found", 1, true) and not tostring(d):find("Lock wait", 1, true) then
            break
        end
        log.info("payment " .. payment_id .. " retried (attempt " .. attempt .. "): " .. tostring(d))
    end
    if not ok then
        -- a concurrent request with the same payment_id recorded it first: its answer is this one's too
        local first = M.recorded(payment_id)
        if first then
            return 200, first
        end
        return nil, tostring(d)
    end
    if d.outcome == "paid" then
        M.paid(1)
    elseif d.outcome == "refund_due" then
        M.refund_due(1)
    end
    if d.after == "expired" then
        life.expired(1)
        life.release_now(d.row)
    end
    return d.status, d.answer or d.expected
end

return M
