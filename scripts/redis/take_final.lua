-- redis/take_final.lua: records an order of a bucketed item in its user's bucket once the other buckets gave what this
-- one lacks (common/buckets.lua; sale/gather.lua prepends sale/decide.lua as `decide`).
-- KEYS: stock, users, sold, meta, queued, order (the user's bucket: one slot).
-- ARGV: item, order id, user, quantity, units from this bucket, created_at (ms), parts ("b:n b:n", from the others).
-- The window and the user's limit are decided for the whole quantity; then this bucket must still hold its units.
-- Returns { "ok", stock after }, { refusal, stock } or { "short", stock } (fewer units here than planned: nothing
-- was written; the caller gathers more from the others or gives up).
local m = redis.call("HMGET", KEYS[4], "limit_per_user", "starts_at", "ends_at", "rebuilding")
local limit = tonumber(m[1])
if not limit then
    return { "no_meta", 0 }
end
local item = { limit = limit, starts_at = tonumber(m[2]), ends_at = tonumber(m[3]), rebuilding = m[4] }
local stock = tonumber(redis.call("GET", KEYS[1]) or "0")
local q, here, now = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local bought = tonumber(redis.call("HGET", KEYS[2], ARGV[3]) or "0")
local refusal = decide(item, q, bought, q, now) -- the stock is the other question, below
if refusal then
    return { refusal, stock }
end
if stock < here then
    return { "short", stock }
end
if here > 0 then
    redis.call("DECRBY", KEYS[1], here)
    redis.call("INCRBY", KEYS[3], here)
end
redis.call("HINCRBY", KEYS[2], ARGV[3], q)
redis.call("HSET", KEYS[6], "item_id", ARGV[1], "user_id", ARGV[3], "quantity", q, "status", "queued",
           "created_at", ARGV[6], "here", here, "parts", ARGV[7])
redis.call("ZADD", KEYS[5], ARGV[6], ARGV[2])
return { "ok", stock - here }
