-- redis/compensate.lua: gives back what a failed order took, and leaves a tombstone (books/).
-- KEYS: stock, users, sold, order, queued. ARGV: user, order id, tombstone ttl (s).
-- The order's status decides. "queued": ours to undo (stock, count, sold). Missing: Redis lost the take with its
-- data; there is nothing to give back, but the tombstone still stops a message that reached Kafka after all.
-- "persisting"/"created": the consumer has it (a delivery report that failed for a message the broker had): the
-- order stands. Returns 1 undone, 0 already undone, -1 stands; an undone order with parts returns them ("b:n ...")
-- instead of 1, for the caller to give back.
local status = redis.call("HGET", KEYS[4], "status")
if status == "compensated" then
    return 0
end
if status and status ~= "queued" then
    return -1
end
local parts
if status == "queued" then
    -- an order of a bucketed item took `here` units of its bucket and the rest as parts of others (common/buckets.lua)
    local f = redis.call("HMGET", KEYS[4], "quantity", "here", "parts")
    local q = tonumber(f[1])
    local here = tonumber(f[2]) or q
    redis.call("INCRBY", KEYS[1], here)
    redis.call("HINCRBY", KEYS[2], ARGV[1], -q)
    redis.call("INCRBY", KEYS[3], -here)
    parts = f[3]
end
redis.call("DEL", KEYS[4])
redis.call("HSET", KEYS[4], "status", "compensated")
redis.call("EXPIRE", KEYS[4], ARGV[3])
redis.call("ZREM", KEYS[5], ARGV[2])
if parts and parts ~= "" then
    return parts -- the caller gives each part back to its bucket (another slot)
end
return 1
