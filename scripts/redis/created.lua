-- redis/created.lua: orders of a batch are in MySQL (consumer.lua; life/init.lua persists one ahead of it).
-- Once in MySQL: the order's hash says so and expires (GET /order falls back to MySQL), and it leaves its item's
-- queued set. KEYS: order, queued pairs (a last order key may come alone: its queued set is in another slot, and
-- the caller updates it apart); ARGV: order_id, ttl (s) per pair: an order that may still expire unpaid keeps its
-- hash until after its deadline, where the release finds which buckets its units came from (common.order_ttl).
for i = 1, #KEYS, 2 do
    if redis.call("EXISTS", KEYS[i]) == 1 then
        redis.call("HSET", KEYS[i], "status", "created")
        redis.call("EXPIRE", KEYS[i], ARGV[i + 1])
    end
    if KEYS[i + 1] then
        redis.call("ZREM", KEYS[i + 1], ARGV[i])
    end
end
return 1
