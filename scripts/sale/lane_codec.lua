-- sale/lane_codec.lua: an order and its outcome as strings, as the process-wide lane carries them between workers
-- (sale/batches.lua). Pure functions.
local buckets = require "common.buckets"

local M = {}

local function encode_order(o)
    return string.format("%s %s %d %d", o.order_id, o.user_id, o.quantity, o.created_at)
end

local function decode_order(tag, s)
    local id, user, q, at = s:match("^(%S+) (%S+) (%d+) (%d+)$")
    return { order_id = id, item_id = buckets.item_of(tag), tag = tag, user_id = user, quantity = math.tointeger(q),
             created_at = math.tointeger(at) }
end

local function encode_took(t)
    if t.failure then
        return "f " .. t.failure .. " " .. tostring(t.err)
    elseif t.refusal then
        return string.format("r %s %d", t.refusal, t.stock_after)
    end
    return string.format("o %d", t.stock_after)
end

local function decode_took(s)
    local kind, rest = s:sub(1, 1), s:sub(3)
    if kind == "o" then
        return { stock_after = math.tointeger(rest) }
    elseif kind == "r" then
        local refusal, n = rest:match("^(%S+) (%-?%d+)$")
        return { refusal = refusal, stock_after = math.tointeger(n) }
    end
    local failure, err = rest:match("^(%S+) (.*)$")
    return { failure = failure, err = err }
end
M.encode_order, M.decode_order, M.encode_took, M.decode_took = encode_order, decode_order, encode_took,
    decode_took

return M
