-- redis/settle.lua: settles an order the sweeper found stale (books/).
-- KEYS: order, queued, stock, users, sold. ARGV: order id, tombstone ttl (s), order ttl (s), persisted ("1"/"0"),
-- cutoff (ms): an order queued after it was taken over by an idempotent retry (redis/idem_touch.lua) since the
-- sweeper looked, and is left alone.
-- Persisted: mark it created and drop it from the queued set (1). Not persisted and still queued (a barrier proved it
-- never reached Kafka): give its stock back and leave a tombstone (2, or its parts "b:n ..." when it has some). Otherwise only tidy the queued set (0).
local status = redis.call("HGET", KEYS[1], "status")
if ARGV[4] == "1" then
    if status then
        redis.call("HSET", KEYS[1], "status", "created")
        redis.call("EXPIRE", KEYS[1], ARGV[3])
    end
    redis.call("ZREM", KEYS[2], ARGV[1])
    return 1
end
if status == "queued" then
    local since = tonumber(redis.call("ZSCORE", KEYS[2], ARGV[1]) or "0")
    if since > tonumber(ARGV[5]) then
        return 0
    end
    local f = redis.call("HMGET", KEYS[1], "quantity", "user_id", "here", "parts")
    local q = tonumber(f[1])
    local here = tonumber(f[3]) or q -- a bucketed item's order: `here` units of this bucket, the rest parts
    redis.call("INCRBY", KEYS[3], here)
    redis.call("HINCRBY", KEYS[4], f[2], -q)
    redis.call("INCRBY", KEYS[5], -here)
    redis.call("DEL", KEYS[1])
    redis.call("HSET", KEYS[1], "status", "compensated")
    redis.call("EXPIRE", KEYS[1], ARGV[2])
    redis.call("ZREM", KEYS[2], ARGV[1])
    if f[4] and f[4] ~= "" then
        return f[4] -- released, with parts of other buckets for the caller to give back
    end
    return 2
end
if not status or status == "compensated" then
    redis.call("ZREM", KEYS[2], ARGV[1])
end
return 0
