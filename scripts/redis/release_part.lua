-- redis/release_part.lua: gives back the part one bucket gave to a cancelled or expired order recorded in another
-- (common/buckets.lua, life/release.lua), exactly once: the part's record is its marker.
-- KEYS: stock, sold, parts, part, meta (the part's bucket). ARGV: order id, units (from the order's list, for a record
-- that expired), ttl (s) of the record, the order's created_at (ms).
-- Returns the units given back: 0 when the part was returned or released already, or belongs to an earlier set-up of
-- the item (its bucket was armed after the order: the units are not this sale's; only recorded); -1 when the bucket
-- is being rebuilt or has no meta (nothing written: the caller tries again later, and the rebuild decides what the
-- order holds).
local m = redis.call("HMGET", KEYS[5], "limit_per_user", "rebuilding", "armed_at")
if not m[1] or m[2] then
    return -1
end
local status = redis.call("HGET", KEYS[4], "status")
redis.call("ZREM", KEYS[3], ARGV[1])
if status == "returned" or status == "released" then
    return 0
end
local n = tonumber(redis.call("HGET", KEYS[4], "units") or ARGV[2])
if tonumber(ARGV[4]) >= (tonumber(m[3]) or 0) then
    redis.call("INCRBY", KEYS[1], n)
    redis.call("DECRBY", KEYS[2], n)
else
    n = 0
end
redis.call("HSET", KEYS[4], "status", "released", "units", n)
redis.call("EXPIRE", KEYS[4], ARGV[3])
return n
