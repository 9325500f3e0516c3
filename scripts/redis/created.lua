-- redis/created.lua: orders of a batch are in MySQL (consumer.lua).
-- Once in MySQL: the order's hash says so and expires (GET /order falls back to MySQL), and it leaves its item's
-- queued set. KEYS: order, queued pairs (a last order key may come alone: its queued set is in another slot, and
-- the caller updates it apart); ARGV: order_id per pair, then the ttl.
local ttl = ARGV[#ARGV]
for i = 1, #KEYS, 2 do
    if redis.call("EXISTS", KEYS[i]) == 1 then
        redis.call("HSET", KEYS[i], "status", "created")
        redis.call("EXPIRE", KEYS[i], ttl)
    end
    if KEYS[i + 1] then
        redis.call("ZREM", KEYS[i + 1], ARGV[(i + 1) / 2])
    end
end
return 1
