-- redis/claim.lua: the consumer claims each order of a batch for persisting (consumer.lua). KEYS: order keys.
-- "queued" becomes "persisting" (a compensation that comes later sees it and lets
-- the order stand); a tombstone ("compensated") is skipped; a missing key means Redis lost the order, which was
-- accepted all the same, so it is persisted. 1 persist, 2 persist (key missing), 0 skip.
local out = {}
for i, key in ipairs(KEYS) do
    local status = redis.call("HGET", key, "status")
    if status == "queued" then
        redis.call("HSET", key, "status", "persisting")
        out[i] = 1
    elseif status == "compensated" then
        out[i] = 0
    elseif status then
        out[i] = 1
    else
        out[i] = 2
    end
end
return out
