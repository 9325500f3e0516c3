-- redis/take_part.lua: takes up to ARGV[2] units of one bucket for an order that is recorded in another (its user's
-- bucket: common/buckets.lua). KEYS: stock, sold, meta, parts, part (one bucket's slot). ARGV: order id, units wanted,
-- now (ms). Returns the units taken: 0 when the bucket has none (or is being rebuilt). The part stays "held" until its
-- order is settled: a compensation or the sweeper gives it back, the sweeper keeps it once the order is safe.
if redis.call("HGET", KEYS[3], "rebuilding") or redis.call("EXISTS", KEYS[3]) == 0 then
    return 0
end
local n = math.min(tonumber(redis.call("GET", KEYS[1]) or "0"), tonumber(ARGV[2]))
if n <= 0 then
    return 0
end
if redis.call("HGET", KEYS[5], "status") ~= "held" then
    redis.call("DEL", KEYS[5]) -- a part this order id had and that was settled (an idempotent retry takes again)
end
redis.call("DECRBY", KEYS[1], n)
redis.call("INCRBY", KEYS[2], n)
redis.call("HINCRBY", KEYS[5], "units", n)
redis.call("HSET", KEYS[5], "status", "held", "order_id", ARGV[1])
redis.call("ZADD", KEYS[4], "NX", ARGV[3], ARGV[1])
return n
