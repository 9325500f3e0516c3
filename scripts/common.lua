-- common.lua: what every handler of the sale shares — key names, validation, responses, item set-up. With
-- common/buckets.lua (the stock buckets' layout) and common/items.lua (an item's settings, cached) it is the base of
-- the scripts: it requires nothing above it (tests/unit/scripts/layers.lua).
local B = require "common.buckets" -- pure functions (no requires): the bucket layout

local M = {}

json.decode_invalid_numbers(false) -- NaN, Infinity and hex are not JSON

-- ===== key names: one item's keys share the {item} hash tag, so they live in one Redis Cluster slot =====
M.keys = {}
function M.keys.stock(item) return "seckill:{" .. item .. "}:stock" end
function M.keys.users(item) return "seckill:{" .. item .. "}:users" end
function M.keys.sold(item) return "seckill:{" .. item .. "}:sold" end
function M.keys.meta(item) return "seckill:{" .. item .. "}:meta" end
-- the item's orders taken and not yet in MySQL (member order_id, score created_at ms): the sweeper and the audit
function M.keys.queued(item) return "seckill:{" .. item .. "}:queued" end
-- a stock bucket's units given to orders of other buckets (common/buckets.lua; `item` is the bucket's tag): the parts
-- still held (member order_id, score ms), and each part
function M.keys.parts(item) return "seckill:{" .. item .. "}:parts" end
function M.keys.part(item, order_id) return "seckill:{" .. item .. "}:part:" .. order_id end
-- An order is found by its id alone (GET /order/{id}), and a buy, a compensation or a claim touches its key together
-- with its item's keys, so the id itself says where they live: "<token>.<unique>", token = redis.slot_token(tag), a
-- short string that hashes to the slot of the hash tag `tag` (the item id; a stock bucket's tag later), and the
-- order's key carries the token as its hash tag. Ids without a token (made before this layout: uuids and
-- idempotency ids have no dot) keep their old key name (a single Redis only).
-- an order's key named `what`, in the slot its id's token says
local function order_key(what, order_id)
    local token = order_id:match("^([0-9a-z]+)%.")
    if token then
        return "seckill:{" .. token .. "}:" .. what .. ":" .. order_id
    end
    return "seckill:" .. what .. ":" .. order_id
end
function M.keys.order(order_id) return order_key("order", order_id) end
-- a cancelled or expired order's release marker (life/release.lua): written with the release, in the order's slot,
-- so a second release of the same order gives nothing back
function M.keys.released(order_id) return order_key("released", order_id) end
-- a new order's id: `unique` (no dot: a uuid, an idempotency id) behind the token of `tag`'s slot
function M.order_id(tag, unique)
    return redis.slot_token(tag) .. "." .. unique
end
-- process-independent bookkeeping (books/): the run_id our books are good on, every item set up, the items
-- being rebuilt after a loss, the rebuild lock, the consumer's record of each barrier. Each is used alone (its own
-- slot on a cluster); no call touches one of them together with an item's keys.
M.keys.epoch = "seckill:epoch"
-- a Redis Cluster's master's epoch: its run_id, under the slot token of the first slot it serves (books/cluster.lua);
-- and where each master's epoch was put (run_id -> token), to tell a reshard from a loss
function M.keys.epoch_at(token) return "seckill:epoch:{" .. token .. "}" end
M.keys.epochs = "seckill:epochs"
M.keys.items = "seckill:items"
-- bumped by every set-up and rebuild: each process reads the set of items again when it changes (common/items.lua)
M.keys.items_generation = "seckill:items:generation"
-- the items with a payment step (life/expire.lua looks for their overdue queued orders)
M.keys.pay_items = "seckill:items:pay"
-- the items with a waiting room (admission/queue.lua's task keeps their draws in MySQL), and a room's keys: the queue
-- (a hash), base .. ":draw" and base .. ":late", in the item's slot, named by its set-up
M.keys.queue_items = "seckill:items:queue"
function M.keys.queue(item, armed_at) return "seckill:{" .. item .. "}:queue:" .. armed_at end
M.keys.rebuilding = "seckill:rebuilding"
M.keys.rebuild_lock = "seckill:rebuild:lock"
M.keys.rebuild_marked = "seckill:rebuild:marked_at"
function M.keys.barrier(token) return "seckill:barrier:" .. token end
-- an Idempotency-Key's record (admission/idempotency.lua), named by the user and key's id (the order id without
-- its token: a repeat naming another item still finds it); always used alone, so its slot is its own
function M.keys.idem(key_id) return "seckill:idem:" .. key_id end

-- a list's entries grouped by the slot of their key (keyof(entry)), in first-seen order: each group can go in one
-- call on a cluster. On a single Redis everything is one group (one call, as before). No group is empty.
function M.by_slot(list, keyof)
    if not redis.cluster then
        return #list > 0 and { list } or {}
    end
    local groups, at = {}, {}
    for _, e in ipairs(list) do
        local slot = redis.slot(keyof(e))
        local g = at[slot]
        if g == nil then
            g = {}
            at[slot] = g
            groups[#groups + 1] = g
        end
        g[#g + 1] = e
    end
    return groups
end

-- each item's armed_at (0 when unknown) by its id, or nil and an error: one pipeline per slot (one in all on a
-- single Redis)
function M.armed_at(items)
    local armed = {}
    for _, group in ipairs(M.by_slot(items, M.keys.meta)) do
        if #group > 0 then
            local r, err = redis.pipeline(function(p)
                for _, id in ipairs(group) do
                    p:call("HGET", M.keys.meta(id), "armed_at")
                end
            end)
            if r == nil then
                return nil, err
            end
            for i, id in ipairs(group) do
                armed[id] = M.int_or_nil(r[i][1]) or 0
            end
        end
    end
    return armed
end

-- the source of a Redis-side script: scripts/redis/NAME.lua, from the snapshot this VM was built from
function M.redis_script(name)
    return app.file("redis/" .. name .. ".lua")
end

-- ===== the sale's settings (config.sale): the core fills in every default (bindings/config_keys.c's rows) =====
local sale, http, idem = config.sale, config.http, config.idempotency
local producer = config.kafka.producer or {}
-- how long a produce may take (librdkafka's message.timeout.ms, a passthrough property: its own default is 300 s)
local produce_ms = math.tointeger(tonumber(producer["message.timeout.ms"])) or 300000
M.settings = {
    -- an order hash is kept this long after it reached MySQL (GET /order falls back to MySQL)
    order_ttl_s = sale.order_ttl_s,
    -- a compensated order's tombstone: longer than any message can wait on the topic
    tombstone_ttl_s = sale.tombstone_ttl_s,
    -- after a loss, how long buys in flight may still be producing: at least a produce and a compensation
    rebuild_grace_ms = math.max(sale.rebuild_grace_ms, produce_ms + 2000),
    -- an order queued this long is stale: any produce of it has ended
    sweep_after_ms = math.max(sale.sweep_after_ms, produce_ms + 5000),
    barrier_timeout_ms = sale.barrier_timeout_ms,
    watch_ms = sale.watch_ms,
    sweep_ms = sale.sweep_ms,
    lock_ms = 30000,
    -- an Idempotency-Key's first answer is replayed this long
    idempotency_ttl_s = idem.ttl_s,
    -- a repeat within this long of the first request is "in_progress"; later, the first request is surely over
    -- (answered by the deadline, its produce ended) and a repeat takes over what it left
    idempotency_lease_ms = math.max(idem.lease_ms, http.deadline_ms + produce_ms + 2000),
}

-- how long an order's hash is kept once it is in MySQL: order_ttl_s, and for an order that may still expire unpaid
-- (life/) that long after its deadline, so that its release finds where its units came from (a bucketed order's parts)
function M.order_ttl(expires_at)
    local ahead = math.tointeger(expires_at) and math.max(0, (expires_at - math.floor(now()) + 999) // 1000) or 0
    return M.settings.order_ttl_s + ahead
end

-- ===== items MySQL knows, as this process last read them (books/loss.lua) =====
-- An item whose keys vanished from Redis while the epoch stayed (a DEL by hand, an eviction, a partial restore) is
-- not an unknown item: MySQL knows it, and books/loss.lua rebuilds it. Until the watcher has marked it, a take finds
-- no meta; it answers 503 (being rebuilt), not 404, when the item is on this list: one entry per item in the shared
-- store (C memory, bounded), written by the loss watcher from MySQL's `items` (the most recently set up first, at
-- most books/vanished.lua's KNOWN_MAX) and by every set-up in this process, so a made-up id costs one lookup here and
-- never a MySQL query.
function M.known_key(item) return "books:known:" .. item end
M.KNOWN_TTL_MS = 60000 -- the watcher writes the list again every 10 s, from what it last read if MySQL is down

-- ===== every item's id, as this process last listed it (common/items.lua): a made-up id costs no Redis command =====
function M.listed_key(item) return "items:listed:" .. item end
M.LISTED_TTL_MS = 60000
M.LIST_MS = 100 -- how often each process asks whether the set of items changed
M.LIST_FRESH_MS = 250 -- a list read longer ago than this is not trusted (a set-up waits this and one more round)

function M.known_item(item)
    return shared.get(M.known_key(item)) ~= nil
end

-- whether the config declares `item` (config.items): app.init sets it up at start, so until it has, the item is
-- being set up, not unknown
local configured = {}
for _, it in ipairs(config.items or {}) do
    if type(it) == "table" and (it.id or it.item_id) then
        configured[tostring(it.id or it.item_id)] = true
    end
end
function M.configured(item)
    return configured[item] == true
end

-- asks this process's loss watcher to look at `item` in its next round (a take found it known and without meta)
M.VANISHED_ASKED = "books:vanished:asked"
function M.ask_rebuild(item)
    shared.set(M.VANISHED_ASKED, item, 10000)
end

-- the process-wide sold-out mark (shared store): answers 409 without Redis until it expires or is cleared
function M.soldout_key(item) return "soldout:" .. item end
M.SOLDOUT_TTL_MS = 1000

-- ===== responses =====
function M.fail(status, code, message)
    return status, { ok = false, error = code, message = message }
end

function M.bad_request(message) return M.fail(400, "bad_request", message) end
function M.unavailable(message) return M.fail(503, "unavailable", message or "a backend is unavailable; nothing was taken") end

-- ===== validation =====
function M.valid_id(s)
    return type(s) == "string" and #s >= 1 and #s <= 64 and s:find("^[A-Za-z0-9_.:%-]+$") ~= nil
end

-- JSON numbers decode as floats; accept only whole numbers within [lo, hi]
function M.whole(v, lo, hi)
    if type(v) ~= "number" or v ~= v or v % 1 ~= 0 or v < lo or v > hi then
        return nil
    end
    return math.tointeger(v)
end

-- the request body as a JSON object, or nil and a message
function M.json_object(req)
    local body, err = req:json()
    if body == nil then
        return nil, "body must be valid JSON"
    end
    if type(body) ~= "table" or (next(body) == 1) or body[1] ~= nil then
        return nil, "body must be a JSON object"
    end
    return body
end

-- the item_id and user_id a JSON body names (POST /seckill/token, POST /queue/join), or nil and what is wrong (400)
function M.item_and_user(req)
    local body, err = M.json_object(req)
    if body == nil then
        return nil, err
    elseif not M.valid_id(body.item_id) then
        return nil, "item_id must be 1-64 characters of A-Za-z0-9_.:-"
    elseif not M.valid_id(body.user_id) then
        return nil, "user_id must be 1-64 characters of A-Za-z0-9_.:-"
    end
    return body.item_id, body.user_id
end

function M.int_or_nil(s)
    if s == nil or s == false or s == "" then return nil end
    return math.tointeger(tonumber(s))
end

-- ===== item set-up (admin route and start-up items) =====
-- MySQL's `items` row is the record a rebuild starts from, so it is written first: a set-up that cannot be recorded
-- is refused. Then one Redis-side script sets up stock, per-user counts, sold and meta atomically; with
-- only_if_missing it does nothing for an item that exists (a restart never resets a running sale).
local SETUP_SCRIPT = M.redis_script("setup")

-- returns the item table, or nil and an error (the item is untouched then; "exists" with only_if_missing)
-- admission: the item's admission settings as stored (common/items.lua's encode), "" for none
-- the stock buckets an item's stored settings name (common/items.lua keeps them with the admission settings, in
-- the meta and in MySQL, so a rebuild finds them): 1 unless set
-- an item's stored settings (the meta's or MySQL's `admission` text) as a table, {} when there are none
-- (common/items.lua's decode)
local function stored(settings)
    if type(settings) ~= "string" or settings == "" then
        return {}
    end
    local ok, t = pcall(json.decode, settings)
    return ok and type(t) == "table" and t or {}
end

M.stored_settings = stored

function M.buckets_in(settings)
    local k = math.tointeger(stored(settings).buckets) or 1
    return math.max(1, math.min(k, B.MAX))
end

-- whether an item's stored settings give it a payment step (life/: its orders expire unpaid)
function M.pays(settings)
    return (math.tointeger(stored(settings).pay_within_s) or 0) > 0
end

-- whether an item's stored settings give it a waiting room (admission/queue.lua)
function M.queues(settings)
    return type(stored(settings).waiting_room) == "table"
end

function M.setup_item(item, stock, limit, starts_at, ends_at, only_if_missing, admission)
    admission = admission or ""
    local buckets = M.buckets_in(admission)
    local armed_at = math.floor(now())
    if only_if_missing then
        -- an item known to Redis or to MySQL is never armed again: a lost one is rebuilt (books/)
        local exists, err = redis.call("EXISTS", M.keys.meta(item))
        if exists == nil or exists == false then
            return nil, "redis: " .. tostring(err)
        end
        local rows, merr = mysql.query("SELECT 1 AS x FROM items WHERE item_id = ?", item)
        if rows == nil then
            return nil, "mysql: " .. tostring(merr)
        end
        if exists == 1 or #rows > 0 then
            return nil, "exists"
        end
    end
    local res, merr = mysql.query([[
        INSERT INTO items (item_id, stock_initial, limit_per_user, starts_at, ends_at, armed_at, admission)
        VALUES (?, ?, ?, ?, ?, ?, ?)
        ON DUPLICATE KEY UPDATE stock_initial = VALUES(stock_initial), limit_per_user = VALUES(limit_per_user),
            starts_at = VALUES(starts_at), ends_at = VALUES(ends_at), armed_at = VALUES(armed_at),
            admission = VALUES(admission), queue_ceiling = 0]],
        item, stock, limit, starts_at or mysql.null, ends_at or mysql.null, armed_at, admission)
    if res == nil then
        return nil, "mysql: " .. tostring(merr)
    end
    shared.set(M.known_key(item), true, M.KNOWN_TTL_MS) -- MySQL knows it from here on
    -- three calls, each in one slot (a cluster): the item joins the set of items first (one listed and not set up
    -- is harmless: the sweeper and the stats skip it), then is set up, then leaves the rebuilding set (one left
    -- there without its meta's flag is dropped by the next rebuild round)
    local added, aerr = redis.call("SADD", M.keys.items, item)
    if added == nil or added == false then
        return nil, "redis: " .. tostring(aerr)
    end
    added, aerr = redis.call(M.pays(admission) and "SADD" or "SREM", M.keys.pay_items, item)
    if added == nil or added == false then
        return nil, "redis: " .. tostring(aerr)
    end
    added, aerr = redis.call(M.queues(admission) and "SADD" or "SREM", M.keys.queue_items, item)
    if added == nil or added == false then
        return nil, "redis: " .. tostring(aerr)
    end
    -- a bucketed item (common/buckets.lua): its other buckets first, each a plain item of its share (and the buckets
    -- of an earlier set-up with more of them dropped), the home bucket last: its meta is what makes the item known
    local shares = B.shares(stock, buckets)
    local old = M.buckets_in((redis.call("HGET", M.keys.meta(item), "admission")))
    for b = buckets, old - 1 do
        local tag = B.tag(item, b)
        local ok, derr = redis.call("DEL", M.keys.stock(tag), M.keys.users(tag), M.keys.sold(tag), M.keys.meta(tag),
            M.keys.queued(tag), M.keys.parts(tag))
        if ok == nil or ok == false then
            return nil, "redis: " .. tostring(derr)
        end
    end
    for b = 1, buckets - 1 do
        local tag = B.tag(item, b)
        local res, berr = redis.evalsha(SETUP_SCRIPT,
            { M.keys.stock(tag), M.keys.users(tag), M.keys.sold(tag), M.keys.meta(tag), M.keys.queued(tag),
              M.keys.parts(tag) },
            { shares[b], limit, starts_at or "", ends_at or "", armed_at, "0", "", shares[b] })
        if res == nil or res == false then
            return nil, "redis: " .. tostring(berr)
        end
    end
    local created, err = redis.evalsha(SETUP_SCRIPT,
        { M.keys.stock(item), M.keys.users(item), M.keys.sold(item), M.keys.meta(item), M.keys.queued(item),
          M.keys.parts(item) },
        { shares[0], limit, starts_at or "", ends_at or "", armed_at, only_if_missing and "1" or "0", admission, stock })
    if created == nil or created == false then
        return nil, "redis: " .. tostring(err)
    end
    if created == 1 then
        local removed, rerr = redis.call("SREM", M.keys.rebuilding, item)
        if removed == nil or removed == false then
            log.warn("item " .. item .. " set up; leaving the rebuilding set failed (the rebuild drops it): "
                .. tostring(rerr))
        end
    end
    shared.delete(M.soldout_key(item))
    if created == 0 then
        return nil, "exists"
    end
    -- its meta is written: this process lists it at once, the others when their list sees the generation move
    -- (common/items.lua), which the admin route waits out
    shared.set(M.listed_key(item), true, M.LISTED_TTL_MS)
    local bumped, berr = redis.call("INCR", M.keys.items_generation)
    if bumped == nil or bumped == false then
        return nil, "redis: " .. tostring(berr)
    end
    return {
        item_id = item, stock_initial = stock, stock_left = stock, sold = 0, limit_per_user = limit,
        starts_at = starts_at or json.null, ends_at = ends_at or json.null,
    }, nil, armed_at -- the set-up's time names it (a waiting room's queue: queue/)
end

return M
