-- redis/rebuild_users.lua: writes per-user counts recomputed from MySQL, only while the item is being rebuilt.
-- KEYS: meta, users. ARGV: clear ("1" on the first chunk), then user, units pairs.
if not redis.call("HGET", KEYS[1], "rebuilding") then return 0 end
if ARGV[1] == "1" then redis.call("DEL", KEYS[2]) end
for i = 2, #ARGV, 2 do redis.call("HSET", KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
