-- redis/release_part.lua: gives back the part one bucket gave to a cancelled or expired order recorded in another
-- (common/buckets.lua, life/release.lua), exactly once: the part's record is its marker.
-- KEYS: stock, sold, parts, part (the part's bucket). ARGV: order id, units (from the order's list, for a record that
-- expired), ttl (s) of the record. Returns the units given back (0 when the part was returned or released already).
local status = redis.call("HGET", KEYS[4], "status")
redis.call("ZREM", KEYS[3], ARGV[1])
if status == "returned" or status == "released" then
    return 0
end
local n = tonumber(redis.call("HGET", KEYS[4], "units") or ARGV[2])
redis.call("INCRBY", KEYS[1], n)
redis.call("DECRBY", KEYS[2], n)
redis.call("HSET", KEYS[4], "status", "released", "units", n)
redis.call("EXPIRE", KEYS[4], ARGV[3])
return n
