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

local conf = config.limits or {}
if type(conf) ~= "table" then
    error("config.limits must be a table")
end

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
local scope = conf.scope or "process"
if scope ~= "process" and scope ~= "redis" then
    error("config.limits.scope must be \"process\" or \"redis\", got " .. tostring(scope))
end
local on_error = conf.on_redis_error or "local"
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
    local xff = req.headers["x-forwarded-for"]
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

-- the process's buckets: returns nil, or the index of the first refusing one and its wait (s)
local function take_local(list)
    for i, b in ipairs(list) do
        local ok, wait = limit.take(b.key, b.rate, b.burst)
        if not ok then
            return i, wait
        end
    end
    return nil
end

local labels = {}
for _, kind in ipairs { "ip", "user", "item" } do
    labels[kind] = { limit = kind }
end

-- one atomic script for all of a request's buckets: nothing is spent unless every bucket admits
local function take_redis(list)
    local keys, args = {}, {}
    for i, b in ipairs(list) do
        keys[i] = "seckill:limit:" .. b.key
        args[#args + 1] = b.rate
        args[#args + 1] = b.burst
    end
    local res, err = redis.evalsha(LIMIT, keys, args)
    if type(res) ~= "table" then
        metrics.add("seckilld_admission_redis_errors_total", 1)
        if on_error == "open" then
            return nil
        elseif on_error == "closed" then
            return 1, 1
        end
        return take_local(list)
    end
    if res[1] == 0 then
        return nil
    end
    return res[1], res[2] / 1000
end

local function decide(list)
    local i, wait
    if scope == "redis" then
        i, wait = take_redis(list)
    else
        i, wait = take_local(list)
    end
    for j = 1, (i or #list + 1) - 1 do
        metrics.add("seckilld_admission_admitted_total", 1, labels[list[j].kind])
    end
    if i == nil then
        return nil
    end
    local kind = list[i].kind
    metrics.add("seckilld_admission_refused_total", 1, labels[kind])
    return kind, wait
end

-- the client's and the user's buckets: checked first, so a flood costs no Redis work (scope "process")
function M.check(req, item_id, user_id)
    local list = {}
    if buckets.ip then
        list[#list + 1] = { kind = "ip", key = "ip:" .. M.client_ip(req), rate = buckets.ip.rate, burst = buckets.ip.burst }
    end
    if buckets.user then
        list[#list + 1] = { kind = "user", key = "user:" .. user_id, rate = buckets.user.rate, burst = buckets.user.burst }
    end
    if #list == 0 then
        return nil
    end
    return decide(list)
end

-- the item's buckets: the configured one, and the item's own max_rps (its burst is one second's worth)
function M.check_item(req, item_id, max_rps)
    local list = {}
    if buckets.item then
        list[#list + 1] = { kind = "item", key = "item:" .. item_id, rate = buckets.item.rate, burst = buckets.item.burst }
    end
    if max_rps and max_rps > 0 then
        list[#list + 1] = { kind = "item", key = "item_max_rps:" .. item_id, rate = max_rps,
                            burst = math.max(1, max_rps) }
    end
    if #list == 0 then
        return nil
    end
    return decide(list)
end

return M
