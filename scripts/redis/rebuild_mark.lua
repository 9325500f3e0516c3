-- redis/rebuild_mark.lua: pauses the items of MySQL's `items` table for a rebuild (books/).
-- KEYS: rebuilding set, items set, marked-at key. ARGV: only_missing ("1": only items without meta), now (ms), then
-- 7 fields per item (id, stock_initial, limit, starts_at, ends_at, armed_at, admission). Returns how many were marked.
local marked = 0
for i = 3, #ARGV, 7 do
    local item = ARGV[i]
    local meta = "seckill:{" .. item .. "}:meta"
    if ARGV[1] ~= "1" or redis.call("EXISTS", meta) == 0 then
        redis.call("HSET", meta, "stock_initial", ARGV[i + 1], "limit_per_user", ARGV[i + 2], "starts_at", ARGV[i + 3],
                   "ends_at", ARGV[i + 4], "armed_at", ARGV[i + 5], "admission", ARGV[i + 6], "rebuilding", "1")
        redis.call("SADD", KEYS[1], item)
        redis.call("SADD", KEYS[2], item)
        marked = marked + 1
    end
end
if marked > 0 then redis.call("SET", KEYS[3], ARGV[2]) end
return marked
