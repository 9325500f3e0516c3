-- redis/take_batch.lua: the "eval" strategy's take for a batch of buyers of one item, decided by Redis in one call
-- (sale/stock.lua prepends sale/decide.lua as `decide`). Buyers are decided in order against the running stock and
-- per-user counts, exactly as one call per buyer would, and the accepted ones are written together.
-- KEYS: stock, users, sold, meta, queued, then one order key per buyer (one slot: the order ids carry the item's token).
-- ARGV: item, then per buyer: order id, user, quantity, created_at (ms).
-- Returns one { decision, stock after } per buyer, decision "ok" or a refusal ("no_meta": unknown, or lost with
-- Redis's data; the caller tells which from the epoch, another slot).
local n = (#KEYS - 5)
local out = {}
local m = redis.call("HMGET", KEYS[4], "limit_per_user", "starts_at", "ends_at", "rebuilding")
local limit = tonumber(m[1])
if not limit then
    for i = 1, n do
        out[i] = { "no_meta", 0 }
    end
    return out
end
local item = { limit = limit, starts_at = tonumber(m[2]), ends_at = tonumber(m[3]), rebuilding = m[4] }
local stock = tonumber(redis.call("GET", KEYS[1]) or "0")
local users = {}
for i = 1, n do
    users[i] = ARGV[(i - 1) * 4 + 3]
end
local counts = redis.call("HMGET", KEYS[2], unpack(users))
local bought, taken = {}, 0
for i = 1, n do
    local a = (i - 1) * 4 + 1
    local user, q, now = ARGV[a + 2], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    bought[user] = bought[user] or tonumber(counts[i] or "0") or 0
    local refusal = decide(item, stock - taken, bought[user], q, now)
    if refusal then
        out[i] = { refusal, stock - taken }
    else
        taken = taken + q
        bought[user] = bought[user] + q
        redis.call("HINCRBY", KEYS[2], user, q)
        redis.call("HSET", KEYS[5 + i], "item_id", ARGV[1], "user_id", user,
                   "quantity", q, "status", "queued", "created_at", ARGV[a + 4])
        redis.call("ZADD", KEYS[5], ARGV[a + 4], ARGV[a + 1])
        out[i] = { "ok", stock - taken }
    end
end
if taken > 0 then
    redis.call("DECRBY", KEYS[1], taken)
    redis.call("INCRBY", KEYS[3], taken)
end
return out
