-- redis/idem_begin.lua: the first step of a buy with an Idempotency-Key (admission/idempotency.lua).
-- KEYS: the key's record. ARGV: the request's fingerprint, now (ms), lease (ms), retention (s).
-- The record is created "pending" by the first request. A repeat gets { "replay", status, body } once the first
-- answer is recorded, { "in_progress" } while the first may still be running (its lease), { "resume" } after that
-- (the first died: this request takes its place), or { "mismatch" } when its body differs.
local r = redis.call("HMGET", KEYS[1], "fp", "state", "at", "status", "body")
if not r[1] then
    redis.call("HSET", KEYS[1], "fp", ARGV[1], "state", "pending", "at", ARGV[2])
    redis.call("EXPIRE", KEYS[1], ARGV[4])
    return { "new" }
end
if r[1] ~= ARGV[1] then
    return { "mismatch" }
end
if r[2] == "done" then
    return { "replay", r[4], r[5] }
end
if tonumber(ARGV[2]) - tonumber(r[3]) < tonumber(ARGV[3]) then
    return { "in_progress" }
end
redis.call("HSET", KEYS[1], "at", ARGV[2])
return { "resume" }
