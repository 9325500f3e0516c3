-- redis/rebuild_mark.lua: pauses items of MySQL's `items` table for a rebuild (books/loss.lua, which has put them in
-- the rebuilding and items sets first: those are other slots on a cluster).
-- KEYS: the items' meta keys (one slot). ARGV: only_missing ("1": only items without meta), then 6 fields per key
-- (stock_initial, limit, starts_at, ends_at, armed_at, admission). Returns how many were marked.
local marked = 0
for k = 1, #KEYS do
    local a = 2 + (k - 1) * 6
    if ARGV[1] ~= "1" or redis.call("EXISTS", KEYS[k]) == 0 then
        redis.call("HSET", KEYS[k], "stock_initial", ARGV[a], "limit_per_user", ARGV[a + 1], "starts_at", ARGV[a + 2],
                   "ends_at", ARGV[a + 3], "armed_at", ARGV[a + 4], "admission", ARGV[a + 5], "rebuilding", "1")
        marked = marked + 1
    end
end
return marked
