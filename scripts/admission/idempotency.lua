-- admission/idempotency.lua: safe retries of a buy with an Idempotency-Key header (API.md "Admission"): two steps
-- the buy calls (buy.lua), one before it takes anything and one with its answer.
--
--   local claim, status, body, headers = idempotency.claim(req, order)
--     nil and an answer: the buy stops here, having taken nothing (the first answer replayed, 409 in_progress,
--       422 idempotency_mismatch, 400 a malformed key, 503)
--     a claim, whose step says what the buy does next: "take" (no key, a key seen first, or a repeat of one whose
--       order never stood: take the stock), "deliver" (an earlier request with this key took the stock and did not see
--       the order through: hold that order now, stock.adopt, and put it on Kafka again), "delivered" (the consumer has
--       the order: answer 200)
--   status, body, headers = idempotency.finish(claim, order, status, body)
--     the buy's answer, recorded for the key's repeats
--
-- The order id is derived from the user and the key, so the take itself — which writes the order's key in the same
-- transaction or script as the stock — records that this key took stock: a crash between the take and the answer
-- cannot lead a retry to a second order. A record per key (redis/idem_begin.lua) holds the first answer for
-- idempotency.ttl_s, or "pending" while it is decided. A repeat of a pending key waits out the first request's
-- lease (it may still be running: 409 in_progress); after it, the repeat takes over: an order the first request
-- took is put on Kafka again (the consumer persists an order id once) and answered; if nothing stands, it is sold
-- afresh under the same id.
-- Answers that took nothing for a passing reason (429, 5xx) are not recorded: a retry of those runs anew.
local common = require "common"
local K = common.keys
local S = common.settings

local M = {}

local BEGIN = common.redis_script("idem_begin")
local TOUCH = common.redis_script("idem_touch")
local JSON = { ["content-type"] = "application/json; charset=utf-8" }
local replays = metrics.counter("seckilld_idempotent_replays_total")
local REPLAYED = { ["content-type"] = "application/json; charset=utf-8", ["idempotent-replayed"] = "true" }

-- what a user's key stands for: 32 hex digits of an HMAC, so ids of different keys never meet. It names the key's
-- record; the order id is it behind the item's slot token (common.order_id), so the order lives beside its item.
local function key_id(user, key)
    return "k" .. crypto.hmac_sha256("seckilld idempotency", user .. "\n" .. key):sub(1, 31)
end

-- the first request died after it began: take its place. Returns the step the buy goes on with, or nil and the
-- error when Redis cannot tell. `old_id` is the id a first request made before order ids carried a slot token would
-- have used (an upgrade in between; a single Redis only)
local function resume(order, old_id)
    local id = order.order_id
    local h, err = redis.call("HMGET", K.order(id), "status", "item_id", "user_id", "quantity", "created_at")
    if type(h) ~= "table" then
        return nil, err
    end
    if not h[1] and not redis.cluster then
        local old = redis.call("HMGET", K.order(old_id), "status", "item_id", "user_id", "quantity", "created_at")
        if type(old) == "table" and old[1] and old[1] ~= "compensated" then
            id, h = old_id, old
            order.order_id = old_id
        end
    end
    local status = h[1] or nil -- a missing field is false
    if status == "queued" then
        order.created_at = common.int_or_nil(h[5]) or order.created_at
        order.quantity = common.int_or_nil(h[4]) or order.quantity
        local mine = redis.evalsha(TOUCH, { K.order(id), K.queued(order.tag) }, { id, math.floor(now()) })
        if mine == 1 then
            log.info("idempotent retry takes over order " .. id .. ": putting it on Kafka again")
            return "deliver"
        end
        local again, aerr = redis.call("HGET", K.order(id), "status")
        if again == nil and aerr ~= nil then
            return nil, aerr
        end
        status = again
    end
    if status == "persisting" or status == "created" then
        return "delivered" -- the consumer has it: it was delivered after all
    end
    -- missing (never taken, or Redis lost it) or compensated: nothing stands for this key
    return "take"
end

local function recordable(status)
    return status ~= 429 and status < 500
end

-- the claim of a buy without an Idempotency-Key (most of them): nothing to record, one table for all (claims are
-- only read)
local UNRECORDED = { step = "take" }

function M.claim(req, order)
    local key = req:header("idempotency-key")
    if key == nil then
        return UNRECORDED
    end
    if not common.valid_id(key) then
        return nil, common.bad_request("Idempotency-Key must be 1-64 characters of A-Za-z0-9_.:-")
    end
    local id = key_id(order.user_id, key)
    order.order_id = common.order_id(order.tag, id) -- order.tag: where stock.place put it
    local record = K.idem(id) -- a repeat naming another item finds the record, and its fingerprint differs
    local fingerprint = order.item_id .. "|" .. order.quantity
    local r, err = redis.evalsha(BEGIN, { record },
        { fingerprint, math.floor(now()), S.idempotency_lease_ms, S.idempotency_ttl_s })
    if type(r) ~= "table" then
        return nil, common.unavailable("redis is unavailable: " .. tostring(err) .. "; nothing was taken")
    end
    if r[1] == "mismatch" then
        return nil, common.fail(422, "idempotency_mismatch", "this Idempotency-Key was used with a different body")
    elseif r[1] == "in_progress" then
        return nil, common.fail(409, "in_progress", "the first request with this Idempotency-Key is still being decided")
    elseif r[1] == "replay" then
        replays()
        return nil, math.tointeger(tonumber(r[2])), r[3], REPLAYED
    end

    local step = "take"
    if r[1] == "resume" then
        local rerr
        step, rerr = resume(order, id)
        if step == nil then
            redis.call("DEL", record) -- a passing failure: a retry runs anew
            return nil, common.unavailable("redis is unavailable: " .. tostring(rerr))
        end
    end
    return { step = step, record = record }
end

function M.finish(claim, order, status, body)
    local record = claim.record
    if record == nil then
        return status, body
    end
    if not recordable(status) then
        redis.call("DEL", record)
        return status, body
    end
    -- the body is encoded once, here, so that every replay is byte for byte the first answer
    local text = json.encode(body)
    local ok, rerr = redis.call("HSET", record, "state", "done", "status", status, "body", text)
    if ok == nil then
        -- the answer stands; a repeat after the lease finds the order and answers the same
        log.warn("idempotency: could not record the answer for order " .. order.order_id .. ": " .. tostring(rerr))
    end
    return status, text, JSON
end

return M
