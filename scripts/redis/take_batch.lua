-- redis/take_batch.lua: the "eval" strategy's take for a batch of buyers of one item, decided by Redis in one call
-- (sale/strategy.lua prepends sale/decide.lua as `decide`). Buyers are decided in order against the running stock and
-- per-user counts, exactly as one call per buyer would, and the accepted ones are written together: one HSET of
-- every accepted buyer's new count, one ZADD of every accepted order, and one HSET per order (its own key), so a
-- batch of n accepted buys costs Redis n + 7 commands, not 3n + 5.
-- KEYS: stock, users, sold, meta, queued, then one order key per buyer (one slot: the order ids carry the item's token).
-- ARGV: item, then per buyer: order id, user, quantity, created_at (ms).
-- Returns a flat array, two values per buyer in order: decision ("ok" or a refusal: "no_meta" when the item is
-- unknown or lost with Redis's data, which the caller tells apart from the epoch, another slot), stock after it.
local n = (#KEYS - 5)
local out = {}
local m = redis.call("HMGET", KEYS[4], "limit_per_user", "starts_at", "ends_at", "rebuilding")
local limit = tonumber(m[1])
if not limit then
    for i = 1, n do
        out[2 * i - 1], out[2 * i] = "no_meta", 0
    end
    return out
end

-- a command with a long tail of arguments, sent in pieces: Redis's Lua unpacks at most a few thousand values. The
-- pieces' array replies are joined (HMGET's); others are dropped.
local CHUNK = 4000
local function call_chunked(cmd, key, args)
    local out = {}
    for first = 1, #args, CHUNK do
        local part = redis.call(cmd, key, unpack(args, first, math.min(first + CHUNK - 1, #args)))
        if type(part) == "table" then
            for j = 1, #part do
                out[#out + 1] = part[j]
            end
        end
    end
    return out
end

local item = { limit = limit, starts_at = tonumber(m[2]), ends_at = tonumber(m[3]), rebuilding = m[4] }
local stock = tonumber(redis.call("GET", KEYS[1]) or "0")
local users = {}
for i = 1, n do
    users[i] = ARGV[(i - 1) * 4 + 3]
end
local counts = call_chunked("HMGET", KEYS[2], users)
local bought, taken = {}, 0
local changed, seen, queued = {}, {}, {} -- users whose count changed (first-accepted order); ZADD's score, member
for i = 1, n do
    local a = (i - 1) * 4 + 1
    local user, q, now = ARGV[a + 2], tonumber(ARGV[a + 3]), tonumber(ARGV[a + 4])
    local before = bought[user]
    if before == nil then
        before = tonumber(counts[i] or "0") or 0
        bought[user] = before
    end
    local refusal = decide(item, stock - taken, before, q, now)
    if refusal then
        out[2 * i - 1], out[2 * i] = refusal, stock - taken
    else
        taken = taken + q
        if not seen[user] then
            seen[user] = true
            changed[#changed + 1] = user
        end
        bought[user] = before + q
        redis.call("HSET", KEYS[5 + i], "item_id", ARGV[1], "user_id", user,
                   "quantity", q, "status", "queued", "created_at", ARGV[a + 4])
        queued[#queued + 1] = ARGV[a + 4]
        queued[#queued + 1] = ARGV[a + 1]
        out[2 * i - 1], out[2 * i] = "ok", stock - taken
    end
end
if taken > 0 then
    redis.call("DECRBY", KEYS[1], taken)
    redis.call("INCRBY", KEYS[3], taken)
    local counts_after = {}
    for j, user in ipairs(changed) do
        counts_after[2 * j - 1], counts_after[2 * j] = user, bought[user]
    end
    call_chunked("HSET", KEYS[2], counts_after)
    call_chunked("ZADD", KEYS[5], queued)
end
return out
