-- redis/rebuild_finish.lua: reopens a rebuilt item with stock and sold recomputed from MySQL (books/).
-- KEYS: meta, stock, sold, queued, rebuilding set. ARGV: item, units persisted, tombstone ttl (s).
-- Orders still queued were never on the topic before the barrier: they are not on the rebuilt books, so they get
-- tombstones (a compensation or sweep of them later must not give back stock that was never counted).
if not redis.call("HGET", KEYS[1], "rebuilding") then
    redis.call("SREM", KEYS[5], ARGV[1])
    return 0
end
local initial = tonumber(redis.call("HGET", KEYS[1], "stock_initial"))
local units = tonumber(ARGV[2])
local left = initial - units
if left < 0 then left = 0 end
redis.call("SET", KEYS[2], left)
redis.call("SET", KEYS[3], units)
for _, id in ipairs(redis.call("ZRANGE", KEYS[4], 0, -1)) do
    local key = "seckill:order:" .. id
    if redis.call("HGET", key, "status") == "queued" then
        redis.call("DEL", key)
        redis.call("HSET", key, "status", "compensated")
        redis.call("EXPIRE", key, ARGV[3])
    end
end
redis.call("DEL", KEYS[4])
redis.call("HDEL", KEYS[1], "rebuilding")
redis.call("SREM", KEYS[5], ARGV[1])
return 1
