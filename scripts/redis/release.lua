-- redis/release.lua: gives back the units of cancelled or expired orders of one stock bucket, exactly once each
-- (life/release.lua). MySQL decided each order's fate first; this only moves the units, guarded by the order's
-- release marker (common.lua's keys.released), which the rebuild after a Redis loss also writes (books/rebuild.lua).
-- KEYS: stock, users, sold, meta (one bucket's tag), then per order: its hash, its marker (the same slot: the order id
-- carries the bucket's token). ARGV: the marker's ttl (s), then per order: order id, user, quantity, created_at (ms).
-- Returns per order: 1 released; the order's parts of other buckets ("b:n ...") when it has some, released here and
-- for the caller to give back there; 0 already released, or an order of an earlier set-up of the item (not this
-- sale's units: only marked); -1 the bucket is being rebuilt or has no meta (try again later, nothing written).
local m = redis.call("HMGET", KEYS[4], "limit_per_user", "rebuilding", "armed_at")
local out = {}
local n = (#KEYS - 4) / 2
if not m[1] or m[2] then
    for i = 1, n do
        out[i] = -1
    end
    return out
end
local armed_at = tonumber(m[3]) or 0
local ttl = ARGV[1]
for i = 1, n do
    local order, marker = KEYS[3 + 2 * i], KEYS[4 + 2 * i]
    local a = 1 + 4 * (i - 1)
    local user, q, created_at = ARGV[a + 2], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    if redis.call("EXISTS", marker) == 1 then
        out[i] = 0
    elseif created_at < armed_at then
        redis.call("SET", marker, "earlier", "EX", ttl)
        out[i] = 0
    else
        -- an order of a bucketed item took `here` units of this bucket and the rest as parts of others; its hash may
        -- be gone (expired, or lost with Redis's data): then all its units come back here, which keeps the item's
        -- total (a rebuild puts every unit in the home bucket anyway)
        local f = redis.call("HMGET", order, "here", "parts")
        local here = tonumber(f[1])
        local parts = f[2]
        if here == nil or not parts or parts == "" then
            here, parts = q, nil
        end
        redis.call("INCRBY", KEYS[1], here)
        redis.call("DECRBY", KEYS[3], here)
        if redis.call("HINCRBY", KEYS[2], user, -q) <= 0 then
            redis.call("HDEL", KEYS[2], user)
        end
        redis.call("SET", marker, "1", "EX", ttl)
        out[i] = parts or 1
    end
end
return out
