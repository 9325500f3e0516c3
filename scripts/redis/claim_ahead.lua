-- redis/claim_ahead.lua: claims one queued order for persisting ahead of the consumer (life/init.lua's persist), as
-- redis/claim.lua does for the consumer, but only an order its bucket still counts: one in its bucket's queued set,
-- the bucket not being rebuilt. An order a rebuild dropped (never on the topic before its barrier) or is deciding
-- about must not be brought back by a cancel, a payment or the expire task: only the consumer, which holds its
-- message, may persist it then.
-- KEYS: order, queued, meta (the order's bucket: one slot). ARGV: order id.
-- Returns 1 claimed (queued → persisting, or persisting already), 0 not ours to persist (no such order, given back,
-- or dropped by a rebuild), -1 the bucket is being rebuilt (later).
local m = redis.call("HMGET", KEYS[3], "limit_per_user", "rebuilding")
if not m[1] or m[2] then
    return -1
end
local status = redis.call("HGET", KEYS[1], "status")
if status ~= "queued" and status ~= "persisting" then
    return 0
end
if not redis.call("ZSCORE", KEYS[2], ARGV[1]) then
    return 0
end
redis.call("HSET", KEYS[1], "status", "persisting")
return 1
