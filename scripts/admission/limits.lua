-- admission/limits.lua: rate limits per client IP, per user and per item (API.md "Admission"), as token buckets.
--
--   limits.check(req, item_id, user_id)      → nil when admitted by the ip and user buckets, or kind ("ip", "user")
--                                              and the seconds until a retry would be admitted
--   limits.check_item(req, item_id, max_rps) → the same for the item's buckets (kind "item")
--   limits.client_ip(req)                         → the client's address (trusted proxies' X-Forwarded-For)
--
-- config.limits = {
--     scope = "process",       -- "process": one bucket per key shared by every worker (C: limit.take);
--                              -- "redis": one bucket per key shared by every process on the Redis (redis/limit.lua)
--     on_redis_error = "local",-- scope "redis" and Redis failing: "local" falls back to the process's buckets,
--                              -- "open" admits, "closed" refuses (429)
--     ip = { rate = 50, burst = 100 }, user = { rate = 5, burst = 5 }, item = { rate = 20000, burst = 20000 },
--     trusted_proxies = { "127.0.0.1" },  -- peers whose X-Forwarded-For names the client
-- }
-- A kind left out is not limited. An item's own "max_rps" (PUT /admin/items/{id}) is a bucket of that rate and
-- burst, checked after the configured item limit. Buckets are checked in the order ip, user, item; a request refused
-- by a later bucket has still spent its token in the earlier ones (as nginx's limit_req zones do).
local common = require "common"

local M = {}

local conf = config.limits

local function bucket(kind)
    local b = conf[kind]
    if b == nil then
        return nil
    end
    if type(b) ~= "table" or type(b.rate) ~= "number" or b.rate <= 0 then
        error("config.limits." .. kind .. " needs rate > 0 (requests per second)")
    end
    local burst = b.burst or math.max(1, b.rate)
    if type(burst) ~= "number" or burst < 1 then
        error("config.limits." .. kind .. ".burst must be at least 1")
    end
    return { rate = b.rate, burst = burst }
end

local buckets = { ip = bucket("ip"), user = bucket("user"), item = bucket("item") }
local scope = conf.scope
if scope ~= "process" and scope ~= "redis" then
    error("config.limits.scope must be \"process\" or \"redis\", got " .. tostring(scope))
end
local on_error = conf.on_redis_error
if on_error ~= "local" and on_error ~= "open" and on_error ~= "closed" then
    error("config.limits.on_redis_error must be \"local\", \"open\" or \"closed\", got " .. tostring(on_error))
end
local trusted = {}
for _, addr in ipairs(conf.trusted_proxies or {}) do
    trusted[addr] = true
end
M.scope = scope

-- ===== the client's address =====
-- The peer, unless the peer is a trusted proxy: then the right-most address of X-Forwarded-For that is not one
-- (addresses to its left were written by the client and prove nothing).
function M.client_ip(req)
    local ip = req.peer or "?"
    if not trusted[ip] then
        return ip
    end
    local xff = req:header("x-forwarded-for")
    if type(xff) ~= "string" then
        return ip
    end
    local hops = {}
    for hop in xff:gmatch("[^,%s]+") do
        hops[#hops + 1] = hop
    end
    for i = #hops, 1, -1 do
        if not trusted[hops[i]] then
            return hops[i]
        end
    end
    return hops[1] or ip
end

-- ===== deciding =====
local LIMIT = common.redis_script("limit")

local admitted, refused = {}, {}
for _, kind in ipairs { "ip", "user", "item" } do
    admitted[kind] = metrics.counter("seckilld_admission_admitted_total", { limit = kind })
    refused[kind] = metrics.counter("seckilld_admission_refused_total", { limit = kind })
end
local redis_errors = metrics.counter("seckilld_admission_redis_errors_total")

-- one atomic script for all of a request's buckets: nothing is spent unless every bucket admits. On a cluster the
-- buckets (ip, user, item) are in different slots: one script per slot, in order, each deciding and spending its
-- own; a request refused by a later one has spent the earlier ones (stricter than the rates, never looser).
local function take_redis(list)
    local entries = {}
    for i, b in ipairs(list) do
        entries[i] = { i = i, key = "seckill:limit:" .. b.key, b = b }
    end
    for _, group in ipairs(common.by_slot(entries, function(e) return e.key end)) do
        local keys, args = {}, {}
        for j, e in ipairs(group) do
            keys[j] = e.key
            args[#args + 1] = e.b.rate
            args[#args + 1] = e.b.burst
        end
        local res, err = redis.evalsha(LIMIT, keys, args)
        if type(res) ~= "table" then
            redis_errors()
            if on_error == "open" then
                return nil
            elseif on_error == "closed" then
                return 1, 1
            end
            for i, b in ipairs(list) do -- this process's buckets instead
                local ok, wait = limit.take(b.key, b.rate, b.burst)
                if not ok then
                    return i, wait
                end
            end
            return nil
        end
        if res[1] ~= 0 then
            return group[res[1]].i, res[2] / 1000
        end
    end
    return nil
end

-- scope "redis": one atomic script for all of a request's buckets (the list), falling back per on_redis_error
local function decide_redis(list)
    local i, wait = take_redis(list)
    for j = 1, (i or #list + 1) - 1 do
        admitted[list[j].kind]()
    end
    if i == nil then
        return nil
    end
    local kind = list[i].kind
    refused[kind]()
    return kind, wait
end

-- scope "process": one bucket at a time, with no table built per request (the hot path of a flood)
local function take_one(kind, key, rate, burst)
    local ok, wait = limit.take(key, rate, burst)
    if ok then
        admitted[kind]()
        return nil
    end
    refused[kind]()
    return wait
end

local ip, user, item = buckets.ip, buckets.user, buckets.item

-- the client's and the user's buckets: checked first, so a flood costs no Redis work (scope "process")
function M.check(req, item_id, user_id)
    if scope == "redis" then
        local list = {}
        if ip then
            list[#list + 1] = { kind = "ip", key = "ip:" .. M.client_ip(req), rate = ip.rate, burst = ip.burst }
        end
        if user then
            list[#list + 1] = { kind = "user", key = "user:" .. user_id, rate = user.rate, burst = user.burst }
        end
        return #list > 0 and decide_redis(list) or nil
    end
    local wait = ip and take_one("ip", "ip:" .. M.client_ip(req), ip.rate, ip.burst)
    if wait then
        return "ip", wait
    end
    wait = user and take_one("user", "user:" .. user_id, user.rate, user.burst)
    if wait then
        return "user", wait
    end
    return nil
end

-- the item's buckets: the configured one, and the item's own max_rps (its burst is one second's worth)
function M.check_item(req, item_id, max_rps)
    max_rps = max_rps and max_rps > 0 and max_rps or nil
    if scope == "redis" then
        local list = {}
        if item then
            list[#list + 1] = { kind = "item", key = "item:" .. item_id, rate = item.rate, burst = item.burst }
        end
        if max_rps then
            list[#list + 1] = { kind = "item", key = "item_max_rps:" .. item_id, rate = max_rps,
                                burst = math.max(1, max_rps) }
        end
        return #list > 0 and decide_redis(list) or nil
    end
    local wait = item and take_one("item", "item:" .. item_id, item.rate, item.burst)
    if not wait and max_rps then
        wait = take_one("item", "item_max_rps:" .. item_id, max_rps, math.max(1, max_rps))
    end
    if wait then
        return "item", wait
    end
    return nil
end

return M
