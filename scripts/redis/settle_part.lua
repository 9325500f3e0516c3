-- redis/settle_part.lua: settles a part one bucket gave to an order recorded in another (common/buckets.lua).
-- KEYS: stock, sold, parts, part (the part's bucket). ARGV: order id, ttl (s) of the settled record, "return" (the
-- order failed or never was: the units go back) or "keep" (the order is safe: they stay sold).
-- Returns the units given back (0 when kept, or already settled).
local status = redis.call("HGET", KEYS[4], "status")
redis.call("ZREM", KEYS[3], ARGV[1])
if status ~= "held" then
    return 0
end
if ARGV[3] == "keep" then
    redis.call("HSET", KEYS[4], "status", "kept")
    redis.call("EXPIRE", KEYS[4], ARGV[2])
    return 0
end
local n = tonumber(redis.call("HGET", KEYS[4], "units") or "0")
redis.call("INCRBY", KEYS[1], n)
redis.call("DECRBY", KEYS[2], n)
redis.call("HSET", KEYS[4], "status", "returned")
redis.call("EXPIRE", KEYS[4], ARGV[2])
return n
