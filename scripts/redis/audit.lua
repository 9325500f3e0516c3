-- redis/audit.lua: an item's books as Redis holds them (books/). KEYS: meta, stock, sold, queued.
-- Returns stock_initial, armed_at, rebuilding, stock, sold, queued orders, their units, queued orders without a key.
local units, unknown = 0, 0
local ids = redis.call("ZRANGE", KEYS[4], 0, -1)
for _, id in ipairs(ids) do
    local q = redis.call("HGET", "seckill:order:" .. id, "quantity")
    if q then units = units + tonumber(q) else unknown = unknown + 1 end
end
local meta = redis.call("HMGET", KEYS[1], "stock_initial", "armed_at", "rebuilding")
return { meta[1] or false, meta[2] or false, meta[3] or false, redis.call("GET", KEYS[2]) or false,
         redis.call("GET", KEYS[3]) or false, #ids, units, unknown }
