-- books/loss.lua: Redis losing its data is detected and repaired from MySQL, never turned into a new sale.
local common = require "common"
local books = require "books"
local B = require "common.buckets"
local K = common.keys
local S = common.settings

local M = {}

-- ===== losing Redis's data =====
-- The epoch key holds the run_id of the Redis server that our books were last known good on. Missing: the data
-- was lost (flush, restart without persistence). Another run_id: the server restarted and may have lost
-- acknowledged writes. Either way every item set up in MySQL is paused (meta `rebuilding`; buys answer 503) and
-- rebuilt: wait until no buy from before the loss can still be producing (the grace), pass a barrier (the
-- consumer has persisted everything on the topic), then recompute stock, sold and per-user counts from MySQL.
local MARK = common.redis_script("rebuild_mark")
local RESTORE_USERS = common.redis_script("rebuild_users")
local RESTORE_FINISH = common.redis_script("rebuild_finish")
local SETUP = common.redis_script("setup")

local function take_lock(token)
    local ok = redis.call("SET", K.rebuild_lock, token, "NX", "PX", S.lock_ms)
    return ok == "OK"
end

local RENEW = common.redis_script("lock_renew")

local function renew_lock(token)
    return redis.evalsha(RENEW, { K.rebuild_lock }, { token, S.lock_ms }) == 1
end

local LOCK_RELEASE = common.redis_script("lock_release")

local function release_lock(token)
    redis.evalsha(LOCK_RELEASE, { K.rebuild_lock }, { token })
end

-- runs round(token) holding the rebuild lock, and releases it whatever round does; returns at once when another
-- process holds it (that one is on it)
local function under_lock(round)
    local token = uuid()
    if not take_lock(token) then
        return
    end
    local ok, err = pcall(round, token)
    release_lock(token)
    if not ok then
        error(err, 0)
    end
end

-- marks items of MySQL's `items` table (rows: what mark_all, or the vanished items' check, read) as rebuilding. Each chunk of items
-- joins the rebuilding set (and the set of items) before its metas are marked: an item marked is always found by the
-- rebuild, even if this stops half-way (one put in the set and not marked is dropped from it by restore). Those
-- sets and the metas are different slots on a cluster, so this is several calls, not one script: the marking is
-- not atomic across items, which it need not be (every item is paused by its own meta, and the epoch is set only
-- after all are marked, so an interrupted round is done again).
-- A bucketed item (common/buckets.lua) marked also pauses its other buckets (their metas get the flag), which may live
-- on other masters and would otherwise go on selling from what the rebuild is about to recompute.
-- mode: "0" every row, "1" only those without meta, "2" those without meta or whose meta is of the row's set-up
-- (redis/rebuild_mark.lua)
local function mark_rows(rows, mode)
    local marked = 0
    for i = 1, #rows, 200 do
        local chunk = {}
        for j = i, math.min(i + 199, #rows) do
            chunk[#chunk + 1] = rows[j]
        end
        local ids = {}
        for j, r in ipairs(chunk) do
            ids[j] = r.item_id
        end
        for _, set in ipairs { K.rebuilding, K.items } do
            local ok, serr = redis.call("SADD", set, table.unpack(ids))
            if ok == nil or ok == false then
                return nil, "redis: " .. tostring(serr)
            end
        end
        for _, group in ipairs(common.by_slot(chunk, function(r) return K.meta(r.item_id) end)) do
            local keys, args = {}, { mode }
            for j, r in ipairs(group) do
                keys[j] = K.meta(r.item_id)
                local n = #args
                args[n + 1], args[n + 2] = r.stock_initial, r.limit_per_user
                args[n + 3] = r.starts_at == mysql.null and "" or r.starts_at
                args[n + 4] = r.ends_at == mysql.null and "" or r.ends_at
                args[n + 5] = r.armed_at
                args[n + 6] = r.admission == mysql.null and "" or r.admission
            end
            local res, rerr = redis.evalsha(MARK, keys, args)
            if type(res) ~= "number" then
                return nil, "redis: " .. tostring(rerr)
            end
            marked = marked + res
        end
        for _, r in ipairs(chunk) do
            local k = common.buckets_in(r.admission ~= mysql.null and r.admission or nil)
            if k > 1 and redis.call("HGET", K.meta(r.item_id), "rebuilding") then
                for b = 1, k - 1 do
                    local ok, herr = redis.call("HSET", K.meta(B.tag(r.item_id, b)), "rebuilding", "1")
                    if ok == nil or ok == false then
                        return nil, "redis: " .. tostring(herr)
                    end
                end
            end
        end
    end
    return marked
end

-- the grace of a rebuild runs from the last marking (rebuild below): marked, or nil and why
local function stamp_marked(marked)
    if marked > 0 then
        local ok, serr = redis.call("SET", K.rebuild_marked, math.floor(now()))
        if ok == nil or ok == false then
            return nil, "redis: " .. tostring(serr)
        end
    end
    return marked
end

-- pick(row), if given, chooses the items (the cluster's rounds: those with a key on a master that lost data): nil
-- leaves the row out, true marks it only if its meta is missing, false marks it in any case; without pick every row
-- is marked as only_missing says.
local function mark_all(only_missing, pick)
    local rows, err = mysql.query("SELECT item_id, stock_initial, limit_per_user, starts_at, ends_at, armed_at, "
        .. "admission FROM items")
    if rows == nil then
        return nil, "mysql: " .. tostring(err)
    end
    pick = pick or function()
        return only_missing
    end
    local by_mode, marked = { [true] = {}, [false] = {} }, 0
    for _, r in ipairs(rows) do
        local mode = pick(r)
        if mode ~= nil then
            table.insert(by_mode[mode], r)
        end
    end
    for _, mode in ipairs { true, false } do
        local n, merr = mark_rows(by_mode[mode], mode and "1" or "0")
        if n == nil then
            return nil, merr
        end
        marked = marked + n
    end
    return stamp_marked(marked)
end

-- recomputes one paused item from MySQL; true when it reopened (or was re-armed meanwhile)
-- A bucketed item (common/buckets.lua) comes back with all its remaining stock in the home bucket (MySQL does not know
-- which bucket gave what) and its other buckets empty, each user's count in the user's bucket; they are paused
-- (rebuilding) until the home bucket reopens. Returns the buckets, or nil and an error.
local function restore_buckets(item, k, meta, rows)
    local per = {}
    for _, r in ipairs(rows) do
        local b = B.of_user(r.user_id, k)
        if b > 0 then
            per[b] = per[b] or {}
            table.insert(per[b], r)
        end
    end
    for b = 1, k - 1 do
        local tag = B.tag(item, b)
        local res, err = redis.evalsha(SETUP, { K.stock(tag), K.users(tag), K.sold(tag), K.meta(tag), K.queued(tag),
            K.parts(tag) }, { 0, meta[3], meta[4] or "", meta[5] or "", meta[1] or 0, "0", "", 0 })
        if res == nil or res == false then
            return nil, "redis: " .. tostring(err)
        end
        redis.call("HSET", K.meta(tag), "rebuilding", "1")
        local list = per[b] or {}
        for i = 1, #list, 500 do
            local args = {}
            for j = i, math.min(i + 499, #list) do
                args[#args + 1] = list[j].user_id
                args[#args + 1] = list[j].units
            end
            local ok, herr = redis.call("HSET", K.users(tag), table.unpack(args))
            if ok == nil or ok == false then
                return nil, "redis: " .. tostring(herr)
            end
        end
    end
    local home = {}
    for _, r in ipairs(rows) do
        if B.of_user(r.user_id, k) == 0 then
            home[#home + 1] = r
        end
    end
    return home
end

local function reopen_buckets(item, k)
    for b = 1, k - 1 do
        redis.call("HDEL", K.meta(B.tag(item, b)), "rebuilding")
    end
end

local function restore(item)
    local meta = redis.call("HMGET", K.meta(item), "armed_at", "rebuilding", "limit_per_user", "starts_at", "ends_at",
        "admission")
    if type(meta) ~= "table" then
        return nil, "redis unavailable"
    end
    if not meta[2] then
        redis.call("SREM", K.rebuilding, item) -- set up again by an operator meantime
        return true
    end
    local armed_at = common.int_or_nil(meta[1]) or 0
    local rows, err = mysql.query("SELECT user_id, CAST(SUM(quantity) AS SIGNED) AS units FROM orders "
        .. "WHERE item_id = ? AND created_at >= FROM_UNIXTIME(? / 1000) GROUP BY user_id", item, armed_at)
    if rows == nil then
        return nil, "mysql: " .. tostring(err)
    end
    local units, all = 0, rows
    local k = common.buckets_in(meta[6])
    if k > 1 then
        local rerr
        rows, rerr = restore_buckets(item, k, meta, rows)
        if rows == nil then
            return nil, rerr
        end
        for _, r in ipairs(all) do
            units = units + r.units
        end
    end
    for i = 0, #rows, 500 do -- the first chunk clears the counts, even when there are none
        local args = { i == 0 and "1" or "0" }
        for j = math.max(i, 1), math.min(i + 499, #rows) do
            args[#args + 1] = rows[j].user_id
            args[#args + 1] = rows[j].units
            if k == 1 then
                units = units + rows[j].units
            end
        end
        if i == 0 or #args > 1 then
            local res, rerr = redis.evalsha(RESTORE_USERS, { K.meta(item), K.users(item) }, args)
            if res == nil or res == false then
                return nil, "redis: " .. tostring(rerr)
            end
        end
    end
    local res, rerr = redis.evalsha(RESTORE_FINISH,
        { K.meta(item), K.stock(item), K.sold(item), K.queued(item) }, { units, S.tombstone_ttl_s })
    if res == nil or res == false then
        return nil, "redis: " .. tostring(rerr)
    end
    if k > 1 then
        reopen_buckets(item, k)
    end
    -- apart (another slot on a cluster): if this fails the item is reopened all the same, and the next round finds
    -- its meta without the flag and drops it here again
    redis.call("SREM", K.rebuilding, item)
    shared.delete(common.soldout_key(item))
    if res == 1 then
        log.warn("item " .. item .. " rebuilt from MySQL: " .. units .. " units persisted, reopened")
    end
    return true
end

-- the items to rebuild, the most recently armed first: the sale running now reopens before old, finished ones
local function paused_items()
    local items = redis.call("SMEMBERS", K.rebuilding)
    if type(items) ~= "table" or #items == 0 then
        return nil
    end
    local armed = common.armed_at(items) or {} -- one pipeline per slot on a cluster
    for _, item in ipairs(items) do
        armed[item] = armed[item] or 0
    end
    table.sort(items, function(a, b)
        return armed[a] > armed[b]
    end)
    return items
end

local function rebuild(token)
    local items = paused_items()
    if items == nil then
        return
    end
    -- the grace runs from the marking (by whichever process did it), so a resumed rebuild does not wait again
    local marked_at = common.int_or_nil(redis.call("GET", K.rebuild_marked)) or 0
    local open_at = math.min(marked_at + S.rebuild_grace_ms, math.floor(now()) + S.rebuild_grace_ms)
    log.warn("rebuilding " .. #items .. " item(s) from MySQL: waiting for buys in flight ("
        .. math.max(0, open_at - math.floor(now())) .. " ms), then for the consumer")
    while now() < open_at do
        sleep(math.max(1, math.floor(math.min(1000, open_at - now()))))
        renew_lock(token)
    end
    local passed, err = books.barrier(S.barrier_timeout_ms, function()
        return renew_lock(token)
    end)
    if not passed then
        return books.warn_every("rebuild", 5000, "rebuild postponed: " .. tostring(err))
    end
    for _, item in ipairs(items) do
        local ok, rerr = restore(item)
        if not ok then
            return log.warn("rebuild of " .. item .. " postponed: " .. tostring(rerr))
        end
        renew_lock(token)
    end
end

local function server_run_id()
    local info, err = redis.call("INFO", "server")
    if type(info) ~= "string" then
        return nil, err
    end
    return info:match("run_id:(%x+)")
end

-- ===== items whose keys vanished while the epoch stayed =====
-- The epoch tells that Redis lost its data as a whole; keys can also go one by one (a DEL by hand, an eviction, a
-- partial restore) while MySQL still knows their item. Such an item is not unknown: it is marked and rebuilt by the
-- same machinery as after a loss (the grace, the barrier, stock and per-user counts from MySQL's orders), and
-- answers 503 until then, never 404. Each round (watch_ms) looks at a slice of the items MySQL knows (the list is
-- read again every LIST_EVERY_MS: the KNOWN_MAX most recently set up, also written to the shared store as the
-- process's list of known items: common.known_item), one pipeline per slot (one in all on a single Redis); per stock
-- bucket: the meta's armed_at and rebuilding flag, and whether stock and sold exist; an item set up less than
-- SETTLE_MS ago is left for later rounds (its set-up may still be under way). An item is vanished when
--   its meta is gone: marked as after a flush (only if its meta is still missing: a set-up since wins), or
--   its meta is there, not rebuilding and of the set-up MySQL has (the same armed_at), and a bucket's meta, its
--   stock or its sold is gone: marked in full, only if the meta is still of that set-up (redis/rebuild_mark.lua's
--   mode "2").
-- A take that finds a known item without meta asks for a look at it in the next round (common.ask_rebuild). The
-- marking needs no lock: it only pauses items (a rebuild round takes the items to rebuild when it starts; one marked
-- later is rebuilt by the next round), and the epoch is not touched.
local KNOWN_MAX = 4096
local LIST_EVERY_MS = 10000
local SLICE = 128 -- items looked at per round: 4,096 items every ~16 s at watch_ms = 500
-- a set-up writes MySQL's row first and the home bucket's meta last (common.setup_item): an item set up less than this
-- long ago (by its row's armed_at, any process's clock) may be half-way through, so it is not looked at yet
local SETTLE_MS = 10000
local ITEM_ROW = "SELECT item_id, stock_initial, limit_per_user, starts_at, ends_at, armed_at, admission FROM items "

local vanish = { rows = {}, listed_at = nil, pos = 1 }
metrics.add("seckilld_books_vanished_items_total", 0)

local function admission_of(r)
    return r.admission ~= mysql.null and r.admission or nil
end

-- the rows (needing item_id, armed_at, admission) whose item vanished from Redis, each { row =, mode = "1"|"2" },
-- or nil and why. An item whose replies are errors (a slot in migration) is left for a later round.
local function vanished_of(rows)
    local tags, settled = {}, math.floor(now()) - SETTLE_MS
    for _, r in ipairs(rows) do
        for b = 0, (r.armed_at or 0) <= settled and common.buckets_in(admission_of(r)) - 1 or -1 do
            tags[#tags + 1] = { row = r, b = b, tag = B.tag(r.item_id, b) }
        end
    end
    local state = {} -- item -> { gone =, broken =, skip = }
    for _, group in ipairs(common.by_slot(tags, function(t) return K.meta(t.tag) end)) do
        local res, err = redis.pipeline(function(p)
            for _, t in ipairs(group) do
                p:call("HMGET", K.meta(t.tag), "armed_at", "rebuilding")
                p:call("EXISTS", K.stock(t.tag))
                p:call("EXISTS", K.sold(t.tag))
            end
        end)
        if res == nil then
            return nil, "redis: " .. tostring(err)
        end
        for i, t in ipairs(group) do
            local st = state[t.row.item_id] or {}
            state[t.row.item_id] = st
            local m, stock, sold = res[3 * i - 2][1], res[3 * i - 1][1], res[3 * i][1]
            if type(m) ~= "table" or type(stock) ~= "number" or type(sold) ~= "number" then
                st.skip = true
            elseif t.b == 0 and not m[1] then
                st.gone = true
            elseif m[2] then
                st.skip = true -- being rebuilt (or its buckets being reopened)
            elseif t.b == 0 and common.int_or_nil(m[1]) ~= math.tointeger(t.row.armed_at) then
                st.skip = true -- set up again since the row was read
            elseif not m[1] or stock == 0 or sold == 0 then
                st.broken = true
            end
        end
    end
    local out = {}
    for _, r in ipairs(rows) do
        local st = state[r.item_id]
        if st and (st.gone or (st.broken and not st.skip)) then
            out[#out + 1] = { row = r, mode = st.gone and "1" or "2" }
        end
    end
    return out
end

-- looks at the items `ids` afresh (their rows read from MySQL now) and marks those that vanished from Redis; returns
-- how many were marked and the ids MySQL knows ({id = true}), or nil and why. The start-up's items, GET
-- /admin/items/{id} and the watcher use it.
function M.repair(ids)
    local rows = {}
    for i = 1, #ids, 200 do
        local chunk, marks = {}, {}
        for j = i, math.min(i + 199, #ids) do
            chunk[#chunk + 1], marks[#marks + 1] = ids[j], "?"
        end
        local r, err = mysql.query(ITEM_ROW .. "WHERE item_id IN (" .. table.concat(marks, ", ") .. ")",
            table.unpack(chunk))
        if r == nil then
            return nil, "mysql: " .. tostring(err)
        end
        table.move(r, 1, #r, #rows + 1, rows)
    end
    local known = {}
    for _, r in ipairs(rows) do
        known[r.item_id] = true
        shared.set(common.known_key(r.item_id), true, common.KNOWN_TTL_MS)
    end
    local found, err = vanished_of(rows)
    if found == nil then
        return nil, err
    end
    local by_mode, names, marked = { ["1"] = {}, ["2"] = {} }, {}, 0
    for _, v in ipairs(found) do
        table.insert(by_mode[v.mode], v.row)
        names[#names + 1] = v.row.item_id
    end
    for _, mode in ipairs { "1", "2" } do
        local n, merr = mark_rows(by_mode[mode], mode)
        if n == nil then
            return nil, merr
        end
        marked = marked + n
    end
    local ok, serr = stamp_marked(marked)
    if ok == nil then
        return nil, serr
    end
    if marked > 0 then
        log.warn("item(s) " .. table.concat(names, ", ", 1, math.min(#names, 20)) .. (#names > 20 and ", ..." or "")
            .. " known to MySQL but gone from Redis (a key deleted, evicted or not restored; the epoch is intact): "
            .. marked .. " item(s) paused (503) until rebuilt from MySQL")
        metrics.add("seckilld_books_vanished_items_total", marked)
    end
    return marked, known
end

-- one round's look for vanished items (the epoch intact)
local function vanished_round()
    local t = now()
    if vanish.listed_at == nil or t - vanish.listed_at >= LIST_EVERY_MS then
        vanish.listed_at = t
        local rows = mysql.query("SELECT item_id, armed_at, admission FROM items ORDER BY armed_at DESC LIMIT "
            .. KNOWN_MAX)
        if rows ~= nil then -- MySQL down: the last list stays, and stays known
            vanish.rows, vanish.pos = rows, 1
        end
        for _, r in ipairs(vanish.rows) do
            shared.set(common.known_key(r.item_id), true, common.KNOWN_TTL_MS)
        end
    end
    local ids = {}
    local asked = shared.get(common.VANISHED_ASKED)
    if asked ~= nil then
        shared.delete(common.VANISHED_ASKED)
        ids[1] = asked
    end
    local rows, slice = vanish.rows, {}
    table.move(rows, vanish.pos, math.min(vanish.pos + SLICE - 1, #rows), 1, slice)
    vanish.pos = vanish.pos + SLICE > #rows and 1 or vanish.pos + SLICE
    local found, err = vanished_of(slice)
    if found == nil then
        return books.warn_every("vanished", 5000, "redis: items not compared with MySQL this round: " .. tostring(err))
    end
    for _, v in ipairs(found) do
        ids[#ids + 1] = v.row.item_id
    end
    if #ids > 0 then
        local marked, merr = M.repair(ids) -- read afresh: the list may be 10 s old
        if marked == nil then
            books.warn_every("vanished", 5000, "items gone from Redis not paused yet: " .. tostring(merr))
        end
    end
end

-- ===== a maxmemory-policy that may evict the sale's keys =====
-- Only `noeviction` keeps them. Any other policy lets Redis delete keys once it reaches maxmemory: allkeys-* any key
-- (an item's meta, stock, sold, per-user counts: the item would answer as sold out, or let a buyer past the limit,
-- until the watcher above sees it), volatile-* the keys with a TTL, which are the ones the books cannot rebuild
-- (order hashes, the tombstones that keep a late message from being persisted, Idempotency-Key records). Checked at
-- start-up and every EVICTION_EVERY_MS on every master; reported in /healthz ("redis_eviction": "ok" | "unsafe",
-- with "redis_eviction_error" saying which policy where), as the seckilld_redis_eviction_policy_unsafe gauge (0/1)
-- and in the log (an error when it turns unsafe, then a warning every 5 minutes while it stays so).
local EVICTION_EVERY_MS = 10000
local eviction = { next = 0, unsafe = nil }

local function eviction_round()
    if now() < eviction.next then
        return
    end
    local nodes = redis.cluster and redis.masters() or { false }
    if #nodes == 0 then
        return -- no slot map yet: asked again next round
    end
    local bad = {}
    for _, t in ipairs(nodes) do
        local info
        if t then
            info = redis.call_at(K.epoch_at(t), "INFO")
        else
            info = redis.call("INFO")
        end
        if type(info) ~= "string" then
            return -- Redis down: asked again next round
        end
        local policy = info:match("maxmemory_policy:([%w_-]+)")
        if policy ~= "noeviction" then
            bad[#bad + 1] = string.format("%s%s (port %s, maxmemory %s)", t and "master {" .. t .. "}: " or "",
                policy or "unknown", info:match("tcp_port:(%d+)") or "?", info:match("maxmemory:(%d+)") or "?")
        end
    end
    eviction.next = now() + EVICTION_EVERY_MS
    local unsafe = #bad > 0
    metrics.gauge("seckilld_redis_eviction_policy_unsafe", unsafe and 1 or 0)
    if not unsafe then
        health.note("redis_eviction", "ok")
        if eviction.unsafe then
            log.info("redis: maxmemory-policy is noeviction again: the sale's keys cannot be evicted")
        end
        eviction.unsafe = false
        return
    end
    local message = "redis maxmemory-policy " .. table.concat(bad, "; ") .. ": Redis may evict the sale's keys; a "
        .. "sale needs noeviction (README: Reliability)"
    health.note("redis_eviction", "unsafe", message)
    if not eviction.unsafe then
        log.error(message)
        shared.set("books:warned:eviction", true, 300000)
    else
        books.warn_every("eviction", 300000, message)
    end
    eviction.unsafe = true
end

-- ===== a Redis Cluster: an epoch per master =====
-- Every master has its own run_id, asked with redis.call_at. Master M stands for itself by the token of the first
-- slot it serves (redis.masters(): T); its epoch is `seckill:epoch:{T}` (on M) holding M's run_id, and
-- `seckill:epochs` records run_id -> T for every master (on whichever master its slot is). Each round, per master
-- (run_id R, epoch value V):
--   V == R                                    all well
--   V the run_id of another master serving now  slot T came to M by a reshard (keys move with their slot): not a
--                                             loss; M's epoch is put at T
--   V another run_id, of no master now        M restarted, or failed over to a replica (which may have missed the
--                                             last writes): a loss; every item with a key on M is marked
--   V missing                                 M's epoch was at T' (`seckill:epochs`): T' == T, or T' still on M and
--                                             its epoch gone or not R: M lost its data (flushed, restarted empty; a
--                                             run_id nobody recorded is a restart too): a loss, only the items
--                                             without meta are marked (as after a flush of a single Redis), and
--                                             bucketed items with a bucket on M whose meta is gone in full. T'
--                                             moved to another master: a reshard moved M's first slot away, not a
--                                             loss.
-- So a slot changing owner is never a loss by itself (the epoch follows a master's run_id, not a slot). Not seen:
-- a loss of M in the same round as a reshard that takes M's first slot away; a master added empty (a run_id never
-- recorded, with no epoch moved to it yet) is taken for a restart: its items (none yet) are rebuilt, harmless.
local function master_run_id(token)
    local info, err = redis.call_at(K.epoch_at(token), "INFO", "server")
    if type(info) ~= "string" then
        return nil, err
    end
    return info:match("run_id:(%x+)")
end

-- the masters now: { tokens = {T...}, run = {T = R}, losses = {T = {only_missing =, why =}}, stamp = {T...} }, or
-- nil and why (a master unreachable: nothing to compare this round)
local function survey()
    local tokens = redis.masters()
    if #tokens == 0 then
        return nil, "no slot map"
    end
    local run, live = {}, {}
    for _, t in ipairs(tokens) do
        local r, err = master_run_id(t)
        if r == nil then
            return nil, err
        end
        run[t], live[r] = r, t
    end
    local reg, rerr = redis.call("HGETALL", K.epochs)
    if type(reg) ~= "table" then
        return nil, rerr
    end
    local known = {}
    for i = 1, #reg - 1, 2 do
        known[reg[i]] = reg[i + 1]
    end
    local out = { tokens = tokens, run = run, losses = {}, stamp = {}, n = 0 }
    local function lost(t, only_missing, why)
        out.losses[t] = { only_missing = only_missing, why = why }
        out.n = out.n + 1
    end
    for _, t in ipairs(tokens) do
        local r = run[t]
        local v, err = redis.call("GET", K.epoch_at(t))
        if v == nil and err ~= nil then
            return nil, err
        end
        if v == r then
            if known[r] ~= t then
                table.insert(out.stamp, t)
            end
        elseif v then
            if live[v] then
                table.insert(out.stamp, t) -- its first slot came from another master, with that one's epoch
            else
                lost(t, false, "restarted or failed over (run_id " .. v .. " → " .. r .. ")")
            end
        else
            local was = known[r]
            if was == nil then
                lost(t, true, "lost its data (run_id " .. r .. " without an epoch)")
            elseif was == t then
                lost(t, true, "lost its data (epoch gone)")
            elseif redis.master_of(K.epoch_at(was)) == t then
                local old, gerr = redis.call("GET", K.epoch_at(was))
                if old == nil and gerr ~= nil then
                    return nil, gerr
                end
                if old == r then
                    table.insert(out.stamp, t) -- a slot before its first came to it: the epoch moves there
                else
                    lost(t, true, "lost its data (epoch gone)")
                end
            else
                table.insert(out.stamp, t) -- its first slot went to another master (a reshard)
            end
        end
    end
    return out
end

-- the choice of mark_all for an item row, given the masters that lost data
local function pick_lost(losses)
    return function(r)
        local item = r.item_id
        local k = common.buckets_in(r.admission ~= mysql.null and r.admission or nil)
        local mode -- nil: untouched; true: only if missing; false: in any case
        for b = 0, k - 1 do
            local key = K.meta(B.tag(item, b))
            local l = losses[redis.master_of(key) or ""]
            if l ~= nil then
                local m = l.only_missing
                if m and b > 0 and redis.call("EXISTS", key) == 0 then
                    m = false -- a bucket of it lost: the whole item is rebuilt
                end
                if mode == nil then
                    mode = m
                else
                    mode = mode and m
                end
            end
        end
        return mode
    end
end

-- one round on a cluster (the lock held)
local function cluster_round(token)
    local s, err = survey()
    if s == nil then
        return books.warn_every("survey", 5000, "redis cluster: masters not compared this round: " .. tostring(err))
    end
    if s.n > 0 then
        local marked, merr = mark_all(nil, pick_lost(s.losses))
        local whys = {}
        for _, t in ipairs(s.tokens) do
            if s.losses[t] then
                whys[#whys + 1] = "master {" .. t .. "} " .. s.losses[t].why
            end
        end
        local what = table.concat(whys, "; ")
        if marked == nil then
            return books.warn_every("mark", 5000, "redis " .. what .. "; cannot pause its items yet: " .. merr)
        end
        log.warn("redis cluster: " .. what .. ": " .. marked .. " item(s) paused (503) until rebuilt from MySQL")
        metrics.add("seckilld_redis_data_losses_total", 1)
    end
    if s.n > 0 or #s.stamp > 0 then
        -- after the marking: a round interrupted before is done again
        for _, t in ipairs(s.tokens) do
            local ok, serr = redis.call("SET", K.epoch_at(t), s.run[t])
            if ok == nil or ok == false then
                return books.warn_every("stamp", 5000, "redis cluster: epoch not set: " .. tostring(serr))
            end
        end
        local args = {}
        for _, t in ipairs(s.tokens) do
            args[#args + 1], args[#args + 2] = s.run[t], t
        end
        redis.pipeline(function(p)
            p:call("DEL", K.epochs)
            p:call("HSET", K.epochs, table.unpack(args))
        end)
        -- the take tells "unknown item" (epoch present) from "lost" (gone) by this one
        redis.call("SET", K.epoch, "cluster")
    end
    rebuild(token)
end

local function cluster_watch()
    local failovers = redis.failover_generation() -- before the survey: a failover seen after it waits for the next
    local s = survey()
    if s == nil then
        return -- a master is down, or no map yet: nothing to compare yet
    end
    if s.n == 0 and #s.stamp == 0 then
        -- every master's epoch holds its run_id: a loss a failover caused is marked in Redis already (the marking
        -- comes before the epoch), so the slots paused since (sale/no_meta.lua) may take again
        redis.failover_settle(failovers)
    end
    local pending = redis.call("SCARD", K.rebuilding)
    if pending == nil then
        return
    end
    if s.n == 0 and #s.stamp == 0 then
        local ok, verr = pcall(vanished_round) -- may mark: the rebuild is the next round's
        if not ok then
            books.warn_every("vanished", 5000, "redis: items not compared with MySQL this round: " .. tostring(verr))
        end
        if pending == 0 or pending == false then
            return
        end
    end
    under_lock(cluster_round) -- surveyed again under the lock: another process may have been first
end

-- the task: cheap when all is well (one INFO, one GET, one SCARD; on a cluster an INFO and a GET per master, one
-- HGETALL, one SCARD), besides a slice of the items MySQL knows (one pipeline per slot) and, every 10 s, the
-- eviction policy (an INFO per master)
function M.watch()
    local ok, eerr = pcall(eviction_round)
    if not ok then
        books.warn_every("eviction_check", 5000, "redis: maxmemory-policy not checked: " .. tostring(eerr))
    end
    if redis.cluster then
        return cluster_watch()
    end
    local run_id = server_run_id()
    if run_id == nil then
        return -- Redis is down: nothing to compare yet
    end
    -- two calls: the keys are in different slots on a cluster
    local epoch, err = redis.call("GET", K.epoch)
    if epoch == nil and err ~= nil then
        return
    end
    if epoch == run_id then
        local vok, verr = pcall(vanished_round) -- may mark: the rebuild below takes it
        if not vok then
            books.warn_every("vanished", 5000, "redis: items not compared with MySQL this round: " .. tostring(verr))
        end
    end
    local pending = redis.call("SCARD", K.rebuilding)
    if pending == nil then
        return
    end
    if epoch == run_id and (pending == 0 or pending == false) then
        return
    end
    under_lock(function(token)
        if epoch ~= run_id then
            local kind = epoch and "restarted (run_id " .. tostring(epoch) .. " → " .. run_id .. ")" or "lost its data"
            -- after a flush only items without meta are on no books; after a restart every item may be stale
            local marked, merr = mark_all(not epoch)
            if marked == nil then
                return books.warn_every("mark", 5000, "redis " .. kind .. "; cannot pause the items yet: " .. merr)
            end
            redis.call("SET", K.epoch, run_id)
            if marked > 0 then
                log.warn("redis " .. kind .. ": " .. marked .. " item(s) paused (503) until rebuilt from MySQL")
                metrics.add("seckilld_redis_data_losses_total", 1)
            end
        end
        rebuild(token)
    end)
end

return M
