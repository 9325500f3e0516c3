-- redis/setup.lua: sets an item (or one stock bucket of it: common/buckets.lua) up atomically: stock, per-user counts,
-- sold, meta (common.lua's setup_item, which adds the item to the set of items and drops it from the rebuilding set
-- in calls of their own: other slots).
-- KEYS: stock, users, sold, meta, queued, parts (one slot: the item's or the bucket's tag).
-- ARGV: stock, limit, starts_at, ends_at, armed_at, only_if_missing ("1": do nothing for an item that exists),
-- admission settings (common/items.lua), the item's whole stock (its meta's stock_initial: the home bucket's
-- stock is only its share).
if ARGV[6] == "1" and redis.call("EXISTS", KEYS[4]) == 1 then return 0 end
redis.call("SET", KEYS[1], ARGV[1])
redis.call("DEL", KEYS[2], KEYS[5], KEYS[6])
redis.call("SET", KEYS[3], 0)
redis.call("DEL", KEYS[4])
redis.call("HSET", KEYS[4], "stock_initial", ARGV[8] or ARGV[1], "limit_per_user", ARGV[2], "starts_at", ARGV[3],
           "ends_at", ARGV[4], "armed_at", ARGV[5], "admission", ARGV[7])
return 1
