-- redis/limit.lua: the rate limits of one request, decided for every process sharing this Redis (admission/limits).
-- Each bucket is GCRA (generic cell rate algorithm): one stored "theoretical arrival time" per key, in µs of Redis's
-- own clock, so no process's clock matters. All buckets are checked first and spent only if all admit.
-- KEYS: one per bucket. ARGV: rate (per s), burst, per bucket. Returns { 0 } admitted, or { i, wait ms } for the
-- first bucket that refuses.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
for i = 1, #KEYS do
    local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
    local interval = 1000000 / rate
    local tat = math.max(tonumber(redis.call("GET", KEYS[i]) or "0"), now) + interval
    if tat - now > burst * interval then
        return { i, math.max(1, math.ceil((tat - now - burst * interval) / 1000)) }
    end
    tats[i] = tat
end
for i = 1, #KEYS do
    redis.call("SET", KEYS[i], string.format("%.0f", tats[i]), "PX", math.max(1, math.ceil((tats[i] - now) / 1000)))
end
return { 0 }
