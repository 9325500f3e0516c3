-- redis/rebuild_finish.lua: reopens a rebuilt item with stock and sold recomputed from MySQL (books/).
-- KEYS: meta, stock, sold, queued (one slot: the item's tag). ARGV: units persisted, tombstone ttl (s).
-- Orders still queued were never on the topic before the barrier: they are not on the rebuilt books, so they get
-- tombstones (a compensation or sweep of them later must not give back stock that was never counted); their keys
-- are in the item's slot (their ids carry its token). The caller drops the item from the rebuilding set after.
local function order_key(id) -- common.lua's keys.order: the id's slot token is its key's hash tag
    local token = id:match("^([0-9a-z]+)%.")
    return token and ("seckill:{" .. token .. "}:order:" .. id) or ("seckill:order:" .. id)
end
if not redis.call("HGET", KEYS[1], "rebuilding") then
    return 0
end
local initial = tonumber(redis.call("HGET", KEYS[1], "stock_initial"))
local units = tonumber(ARGV[1])
local left = initial - units
if left < 0 then left = 0 end
redis.call("SET", KEYS[2], left)
redis.call("SET", KEYS[3], units)
for _, id in ipairs(redis.call("ZRANGE", KEYS[4], 0, -1)) do
    local key = order_key(id)
    if redis.call("HGET", key, "status") == "queued" then
        redis.call("DEL", key)
        redis.call("HSET", key, "status", "compensated")
        redis.call("EXPIRE", key, ARGV[2])
    end
end
redis.call("DEL", KEYS[4])
redis.call("HDEL", KEYS[1], "rebuilding")
return 1
