-- redis/idem_touch.lua: a retry takes over an order whose first request died after the take (idempotency): while
-- the order is still queued, its place in the queued set is moved to now, so the sweeper (redis/settle.lua) leaves
-- it alone while this request puts it on Kafka again.
-- KEYS: order, queued. ARGV: order id, now (ms). Returns 1 when the order is queued and now ours to deliver, else 0.
if redis.call("HGET", KEYS[1], "status") ~= "queued" then
    return 0
end
redis.call("ZADD", KEYS[2], ARGV[2], ARGV[1])
return 1
