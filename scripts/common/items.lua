-- common/items.lua: what a buy needs to know of an item (its window, limit, admission settings and stock buckets),
-- without a Redis round trip per request: each worker keeps what it read for a second, then reads it again in the
-- background while it answers from what it read (up to 5 s old: a Redis that stalls for a moment does not stall the
-- refusals that need no other Redis command, and a Redis that is gone is waited for). Admission, the sale's take
-- and the sweeper all read it, so it is in the base beside common.lua (its names in the shared store keep their
-- "admission:" prefix). A PUT /admin/items/{id} in this process is seen at once (it bumps a process-wide generation,
-- which drops what every worker read of every item); another process sees it about a second later (its first request
-- after the second still reads the old settings).
--
--   items.get(item)   → { limit, starts_at, ends_at, require_token, token_ttl_ms, max_rps, buckets, price,
--                       pay_within_s, waiting_room, armed_at }, or false (no such item; false, "unlisted" when no
--                       Redis command was needed to tell), or nil and an error (Redis failed); waiting_room is
--                       { admit_per_s, pass_ttl_s } or nil (admission/queue.lua), armed_at names the set-up
--   items.refresh_list()  the task that keeps this process's list of every item's id (below)
--   items.changed(item)  the item was set up again: forget what this process read
--   items.encode(settings) / items.decode(text)  the admission settings as stored (meta field and MySQL column),
--                        with the item's stock buckets (common/buckets.lua) where it has more than one, and its
--                        payment step (price, pay_within_s: life/) where it has one, and its waiting room (queue/)
local common = require "common"
local K = common.keys

local M = {}

local TTL_MS = 1000   -- read again after a second
local STALE_MS = 5000 -- answered from the last read while it is read again, up to this old
local cache, cached = {}, 0 -- item → { at = ms, version = v, value = settings }; how many
local MAX_CACHED = 1024    -- real items are few; the bound only matters if an item's meta comes and goes
-- an id Redis does not know is remembered for the same second in the shared store (C memory, bounded, expiring),
-- not here: a flood of made-up ids must not grow the VM's memory
local function unknown_key(item)
    return "admission:unknown:" .. item
end

-- the process-wide generation: one atomic cell (shared.counters), resolved once per VM, so that a buy reads it with
-- one atomic load (no lock, no key to build); set-ups are rare, so one generation for every item costs nothing
local generation = assert(shared.counters("admission:generation", 1))

function M.encode(s)
    local buckets = (s.buckets or 1) > 1 and s.buckets or nil
    local price = (s.price or 0) > 0 and s.price or nil
    local pay = (s.pay_within_s or 0) > 0 and s.pay_within_s or nil
    if not (s.require_token or s.token_ttl_ms or s.max_rps or buckets or price or pay or s.waiting_room) then
        return ""
    end
    return json.encode { require_token = s.require_token or nil, token_ttl_ms = s.token_ttl_ms, max_rps = s.max_rps,
                         buckets = buckets, price = price, pay_within_s = pay, waiting_room = s.waiting_room }
end

M.decode = common.stored_settings

-- the waiting room (queue/) of decoded settings: { admit_per_s, pass_ttl_s } with whole numbers, or nil
function M.waiting_room(a)
    local w = type(a) == "table" and a.waiting_room
    if type(w) ~= "table" then
        return nil
    end
    local rate, ttl = math.tointeger(w.admit_per_s), math.tointeger(w.pass_ttl_s)
    if rate == nil or ttl == nil or rate < 1 or ttl < 1 then
        return nil
    end
    return { admit_per_s = rate, pass_ttl_s = ttl }
end

-- the deadline of an order of an item with these settings, accepted at `created_at` (ms), or nil without a payment
-- step (life/)
function M.expires_at(settings, created_at)
    if settings and settings.pay_within_s > 0 then
        return created_at + settings.pay_within_s * 1000
    end
    return nil
end

-- ===== the list of items: a made-up id is answered without Redis =====
-- Each process keeps every item's id in the shared store (common.listed_key), read from the set of items (SMEMBERS)
-- by its task "items.list" whenever a set-up or a rebuild bumped the set's generation, and every RELIST_MS anyway. An
-- id not on a list read less than LIST_FRESH_MS ago, and not among the items MySQL knows (common.known_item: one whose keys
-- vanished is rebuilt, 503, not 404), is no item: items.get answers false, "unlisted" without a Redis command, and
-- writes nothing per id (a flood of made-up ids leaves memory where it was). A set-up lists its item in its own process
-- once its meta is written and waits out LIST_FRESH_MS and one LIST_MS before answering (admin.lua): a process whose
-- list is still trusted then read the generation after the set-up bumped it.
local RELIST_MS = 10000

local function unlisted(item)
    local at = shared.get("items:list:at")
    return at ~= nil and now() - at < common.LIST_FRESH_MS and shared.get(common.listed_key(item)) == nil
        and not common.known_item(item)
end

-- the list is current as of `t` when the generation read at `t` is the one listed
function M.refresh_list()
    local t = math.floor(now()) -- before the read: the list is no fresher than the generation it saw
    local g, err = redis.call("GET", K.items_generation)
    if g == nil and err ~= nil then
        shared.delete("items:list:at") -- not trusted until read again: items.get asks Redis meanwhile
        return
    end
    g = g or "0"
    local listed_at = shared.get("items:list:listed_at")
    if shared.get("items:list:generation") ~= g or listed_at == nil or t - listed_at >= RELIST_MS then
        shared.delete("items:list:at")
        local ids = redis.call("SMEMBERS", K.items)
        if type(ids) ~= "table" then
            return
        end
        for _, id in ipairs(ids) do
            if not shared.set(common.listed_key(id), true, common.LISTED_TTL_MS) then
                return -- the shared store is full: an incomplete list is never trusted
            end
        end
        shared.set("items:list:generation", g)
        shared.set("items:list:listed_at", t)
    end
    shared.set("items:list:at", t)
end

function M.changed(item)
    generation:add(1)
    cache[item] = nil
end

-- what Redis holds of the item: its settings, false (no such item), or nil and an error
local function read(item)
    local m, err = redis.call("HMGET", K.meta(item), "limit_per_user", "starts_at", "ends_at", "admission", "armed_at")
    if type(m) ~= "table" then
        return nil, err
    end
    if not m[1] then
        return false
    end
    local a = M.decode(m[4])
    return {
        limit = common.int_or_nil(m[1]), starts_at = common.int_or_nil(m[2]), ends_at = common.int_or_nil(m[3]),
        require_token = a.require_token == true, token_ttl_ms = math.tointeger(a.token_ttl_ms) or 10000,
        max_rps = tonumber(a.max_rps), buckets = common.buckets_in(m[4]),
        price = math.tointeger(a.price) or 0, pay_within_s = math.tointeger(a.pay_within_s) or 0,
        waiting_room = M.waiting_room(a), armed_at = common.int_or_nil(m[5]) or 0,
    }
end

local function store(item, t, version, value)
    if not value then
        cache[item] = nil
        shared.set(unknown_key(item), version, TTL_MS)
        return
    end
    if cache[item] == nil then
        cached = cached + 1
        if cached > MAX_CACHED then
            cache, cached = {}, 1
        end
    end
    cache[item] = { at = t, version = version, value = value }
end

-- the read of an entry past TTL_MS, in the background: the requests meanwhile are answered from the entry. A failed
-- read is not tried again in the background: the entry serves until STALE_MS, then a request reads it itself.
local function refresh(item, c)
    local t = now()
    local value = read(item)
    if value ~= nil and cache[item] == c and c.version == generation:get(1) then
        store(item, t, c.version, value)
    end
end

function M.get(item)
    local t = now()
    local version = generation:get(1)
    local c = cache[item]
    if c ~= nil and c.version == version then
        local age = t - c.at
        if age < TTL_MS then
            return c.value
        end
        -- read again, but not in the request's way: one refresh at a time in the background, and until it lands
        -- (STALE_MS at most) the request is answered from what was read, so a refusal never waits for Redis. The
        -- spawn fails outside a worker's API VM: then the read is the caller's, as below.
        if age < STALE_MS and (c.refreshing or pcall(spawn, refresh, item, c)) then
            c.refreshing = true
            return c.value
        end
    end
    if c == nil then
        if unlisted(item) then
            return false, "unlisted"
        elseif shared.get(unknown_key(item)) == version then
            return false
        end
    end
    local value, err = read(item)
    if value == nil then
        return nil, err
    end
    store(item, t, version, value)
    return value
end

return M
