-- redis/take.lua: the "eval" strategy's take, run by Redis (sale/stock.lua prepends sale/decide.lua as `decide`).
-- KEYS: stock, users, sold, meta, order, queued, epoch. ARGV: user, quantity, now (ms), order id, item.
-- Returns {"ok", stock after} or {refusal, stock}; "lost" when the meta and the epoch are both gone (Redis lost
-- its data), "unknown_item" when only the meta is.
local m = redis.call("HMGET", KEYS[4], "limit_per_user", "starts_at", "ends_at", "rebuilding")
local limit = tonumber(m[1])
if not limit then
    if redis.call("EXISTS", KEYS[7]) == 0 then
        return { "lost", 0 }
    end
    return { "unknown_item", 0 }
end
local item = { limit = limit, starts_at = tonumber(m[2]), ends_at = tonumber(m[3]), rebuilding = m[4] }
local q, now = tonumber(ARGV[2]), tonumber(ARGV[3])
local stock = tonumber(redis.call("GET", KEYS[1]) or "0")
local bought = tonumber(redis.call("HGET", KEYS[2], ARGV[1]) or "0")
local refusal = decide(item, stock, bought, q, now)
if refusal then
    return { refusal, stock }
end
redis.call("DECRBY", KEYS[1], q)
redis.call("HINCRBY", KEYS[2], ARGV[1], q)
redis.call("INCRBY", KEYS[3], q)
redis.call("HSET", KEYS[5], "item_id", ARGV[5], "user_id", ARGV[1], "quantity", q, "status", "queued",
           "created_at", ARGV[3])
redis.call("ZADD", KEYS[6], ARGV[3], ARGV[4])
return { "ok", stock - q }
