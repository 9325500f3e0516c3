-- redis/audit.lua: an item's books as Redis holds them (books/). KEYS: meta, stock, sold, queued.
-- Returns stock_initial, armed_at, rebuilding, stock, sold, queued orders, their units, queued orders without a key,
-- and the item's stock buckets (common/buckets.lua: from its settings; 1 for a bucket's own meta, which has none).
local function order_key(id) -- common.lua's keys.order: the id's slot token is its key's hash tag
    local token = id:match("^([0-9a-z]+)%.")
    return token and ("seckill:{" .. token .. "}:order:" .. id) or ("seckill:order:" .. id)
end
local units, unknown = 0, 0
local ids = redis.call("ZRANGE", KEYS[4], 0, -1)
for _, id in ipairs(ids) do
    local q = redis.call("HGET", order_key(id), "quantity")
    if q then units = units + tonumber(q) else unknown = unknown + 1 end
end
local meta = redis.call("HMGET", KEYS[1], "stock_initial", "armed_at", "rebuilding", "admission")
local ok, settings = pcall(cjson.decode, meta[4] or "")
local buckets = ok and type(settings) == "table" and tonumber(settings.buckets) or 1
return { meta[1] or false, meta[2] or false, meta[3] or false, redis.call("GET", KEYS[2]) or false,
         redis.call("GET", KEYS[3]) or false, #ids, units, unknown, buckets }
