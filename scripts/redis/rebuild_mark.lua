-- redis/rebuild_mark.lua: pauses items of MySQL's `items` table for a rebuild (books/mark.lua, which has put them in
-- the rebuilding and items sets first: those are other slots on a cluster).
-- KEYS: the items' meta keys (one slot). ARGV: the mode ("0": every item; "1": only items without meta; "2": items
-- without meta, and items whose meta is of the same set-up as the row: its armed_at is the row's, so a set-up done
-- since the row was read is never paused with the old row's values), then 6 fields per key (stock_initial, limit,
-- starts_at, ends_at, armed_at, admission). Returns how many were marked.
local marked = 0
for k = 1, #KEYS do
    local a = 2 + (k - 1) * 6
    local mark = ARGV[1] == "0" or redis.call("EXISTS", KEYS[k]) == 0
    if not mark and ARGV[1] == "2" then
        mark = redis.call("HGET", KEYS[k], "armed_at") == ARGV[a + 4]
    end
    if mark then
        redis.call("HSET", KEYS[k], "stock_initial", ARGV[a], "limit_per_user", ARGV[a + 1], "starts_at", ARGV[a + 2],
                   "ends_at", ARGV[a + 3], "armed_at", ARGV[a + 4], "admission", ARGV[a + 5], "rebuilding", "1")
        marked = marked + 1
    end
end
return marked
