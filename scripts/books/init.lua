-- books.lua: keeping Redis's books true to the ledger (MySQL plus the orders topic), whatever a backend does.
--
--   compensate(order)   gives back what a failed order took and leaves a tombstone, so a late message is not persisted
--   barrier(ms)         proves that the consumer has persisted everything that was on the topic before it
--   watch_loss()        task: notices Redis losing its data (flushed, restarted) and rebuilds every item from MySQL
--   sweep()             task: settles orders left "queued" (a failed compensation, an unclear Redis failure)
--   audit(item)         Redis's books beside MySQL's, and the drift between them
--
-- An order lives in Redis as a hash (status queued → persisting → created, or compensated) and in its item's
-- `queued` set until the consumer has it in MySQL. Only a tombstone (status "compensated") means "do not persist";
-- a missing order key means Redis lost it, and the consumer persists the order all the same.
local common = require "common"
local K = common.keys
local S = common.settings

local M = {}

-- a warning that a task would repeat every round: once per `ms` per process
local function warn_every(what, ms, message)
    if shared.get("books:warned:" .. what) == nil then
        shared.set("books:warned:" .. what, true, ms)
        log.warn(message)
    end
end

-- ===== compensation (what the order's status decides: redis/compensate.lua) =====
local COMPENSATE = common.redis_script("compensate")

local function compensate_once(order)
    local item = order.item_id
    return redis.evalsha(COMPENSATE,
        { K.stock(item), K.users(item), K.sold(item), K.order(order.order_id), K.queued(item) },
        { order.user_id, order.order_id, S.tombstone_ttl_s })
end

-- returns "restored", "stands" (the consumer has the order) or "failed" (left queued: the sweeper settles it)
function M.compensate(order)
    for attempt = 1, 5 do
        local res, err = compensate_once(order)
        if res == -1 then
            return "stands"
        elseif res ~= nil and res ~= false then
            shared.delete(common.soldout_key(order.item_id))
            return "restored"
        end
        log.warn("compensation for order " .. order.order_id .. " failed (attempt " .. attempt .. "): " .. tostring(err))
        sleep(20 * attempt)
    end
    log.error("stock not restored yet for order " .. order.order_id .. " (item " .. order.item_id .. "): Redis "
        .. "unreachable; the order stays queued and the sweeper settles it")
    return "failed"
end

-- ===== barriers =====
-- A barrier message goes to every partition of the orders topic; the consumer records each one in Redis only after
-- everything before it on that partition is in MySQL (it handles a partition in order and stores offsets after
-- success). When every partition's barrier is recorded, every order produced before the barrier is persisted.
function M.barrier(timeout_ms)
    local n, perr = kafka.partitions()
    if n == nil then
        return nil, "kafka: " .. tostring(perr)
    end
    local token = uuid()
    local value = json.encode { barrier = token }
    for p = 0, n - 1 do
        local ok, err = kafka.produce(nil, value, { partition = p, key = "barrier" })
        if ok == nil then
            return nil, "kafka: " .. tostring(err)
        end
    end
    local deadline = now() + timeout_ms
    while now() < deadline do
        local seen = redis.call("SCARD", K.barrier(token))
        if seen ~= nil and seen >= n then
            return true
        end
        sleep(100)
    end
    return nil, "the consumer did not reach the barrier within " .. timeout_ms .. " ms"
end

-- ===== losing Redis's data =====
-- The epoch key holds the run_id of the Redis server that our books were last known good on. Missing: the data
-- was lost (flush, restart without persistence). Another run_id: the server restarted and may have lost
-- acknowledged writes. Either way every item set up in MySQL is paused (meta `rebuilding`; buys answer 503) and
-- rebuilt: wait until no buy from before the loss can still be producing (the grace), pass a barrier (the
-- consumer has persisted everything on the topic), then recompute stock, sold and per-user counts from MySQL.
local MARK = common.redis_script("rebuild_mark")
local RESTORE_USERS = common.redis_script("rebuild_users")
local RESTORE_FINISH = common.redis_script("rebuild_finish")

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

-- marks the items of MySQL's `items` table (those without meta when only_missing) as rebuilding
local function mark_all(only_missing)
    local rows, err = mysql.query("SELECT item_id, stock_initial, limit_per_user, starts_at, ends_at, armed_at FROM items")
    if rows == nil then
        return nil, "mysql: " .. tostring(err)
    end
    local marked = 0
    for i = 1, #rows, 200 do
        local args = { only_missing and "1" or "0", math.floor(now()) }
        for j = i, math.min(i + 199, #rows) do
            local r = rows[j]
            local n = #args
            args[n + 1], args[n + 2], args[n + 3] = r.item_id, r.stock_initial, r.limit_per_user
            args[n + 4] = r.starts_at == mysql.null and "" or r.starts_at
            args[n + 5] = r.ends_at == mysql.null and "" or r.ends_at
            args[n + 6] = r.armed_at
        end
        local res, rerr = redis.evalsha(MARK, { K.rebuilding, K.items, K.rebuild_marked }, args)
        if type(res) ~= "number" then
            return nil, "redis: " .. tostring(rerr)
        end
        marked = marked + res
    end
    return marked
end

-- recomputes one paused item from MySQL; true when it reopened (or was re-armed meanwhile)
local function restore(item)
    local meta = redis.call("HMGET", K.meta(item), "armed_at", "rebuilding")
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
    local units = 0
    for i = 0, #rows, 500 do -- the first chunk clears the counts, even when there are none
        local args = { i == 0 and "1" or "0" }
        for j = math.max(i, 1), math.min(i + 499, #rows) do
            args[#args + 1] = rows[j].user_id
            args[#args + 1] = rows[j].units
            units = units + rows[j].units
        end
        if i == 0 or #args > 1 then
            local res, rerr = redis.evalsha(RESTORE_USERS, { K.meta(item), K.users(item) }, args)
            if res == nil or res == false then
                return nil, "redis: " .. tostring(rerr)
            end
        end
    end
    local res, rerr = redis.evalsha(RESTORE_FINISH,
        { K.meta(item), K.stock(item), K.sold(item), K.queued(item), K.rebuilding }, { item, units, S.tombstone_ttl_s })
    if res == nil or res == false then
        return nil, "redis: " .. tostring(rerr)
    end
    shared.delete(common.soldout_key(item))
    if res == 1 then
        log.warn("item " .. item .. " rebuilt from MySQL: " .. units .. " units persisted, reopened")
    end
    return true
end

local function rebuild(token)
    local items = redis.call("SMEMBERS", K.rebuilding)
    if type(items) ~= "table" or #items == 0 then
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
    local passed, err
    local deadline = now() + S.barrier_timeout_ms
    repeat
        passed, err = M.barrier(math.min(5000, S.barrier_timeout_ms))
        if not renew_lock(token) then
            return log.warn("rebuild: lost the lock; another process goes on")
        end
    until passed or now() >= deadline
    if not passed then
        return warn_every("rebuild", 5000, "rebuild postponed: " .. tostring(err))
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

-- the task: cheap when all is well (one INFO, one GET, one SCARD)
function M.watch_loss()
    local run_id = server_run_id()
    if run_id == nil then
        return -- Redis is down: nothing to compare yet
    end
    local r = redis.pipeline(function(p)
        p:call("GET", K.epoch)
        p:call("SCARD", K.rebuilding)
    end)
    if r == nil then
        return
    end
    local epoch, pending = r[1][1], r[2][1]
    if epoch == run_id and (pending == 0 or pending == false) then
        return
    end
    local token = uuid()
    if not take_lock(token) then
        return -- another process is on it
    end
    local ok, err = pcall(function()
        if epoch ~= run_id then
            local kind = epoch and "restarted (run_id " .. tostring(epoch) .. " → " .. run_id .. ")" or "lost its data"
            -- after a flush only items without meta are on no books; after a restart every item may be stale
            local marked, merr = mark_all(not epoch)
            if marked == nil then
                return warn_every("mark", 5000, "redis " .. kind .. "; cannot pause the items yet: " .. merr)
            end
            redis.call("SET", K.epoch, run_id)
            if marked > 0 then
                log.warn("redis " .. kind .. ": " .. marked .. " item(s) paused (503) until rebuilt from MySQL")
                metrics.add("seckilld_redis_data_losses_total", 1)
            end
        end
        rebuild(token)
    end)
    release_lock(token)
    if not ok then
        error(err, 0)
    end
end

-- ===== the sweeper =====
-- An order still queued long after any produce of it could have ended was either put on the topic (the consumer is
-- behind, or its "created" mark failed) or never was (its compensation failed, or Redis failed around the take).
-- MySQL tells the first; a barrier proves the second, and only then is the order released.

-- KEYS: order, queued, stock, users, sold; ARGV: order_id, tombstone ttl, order ttl, persisted ("1"/"0")
local SETTLE = common.redis_script("settle")

local function settle(item, id, persisted)
    return redis.evalsha(SETTLE, { K.order(id), K.queued(item), K.stock(item), K.users(item), K.sold(item) },
        { id, S.tombstone_ttl_s, S.order_ttl_s, persisted and "1" or "0" })
end

function M.sweep()
    local items = redis.call("SMEMBERS", K.items)
    if type(items) ~= "table" then
        return
    end
    local cutoff = math.floor(now()) - S.sweep_after_ms
    local stale = {} -- { item, id }
    for _, item in ipairs(items) do
        local ids = redis.call("ZRANGEBYSCORE", K.queued(item), "-inf", cutoff, "LIMIT", 0, 500)
        for _, id in ipairs(type(ids) == "table" and ids or {}) do
            stale[#stale + 1] = { item, id }
        end
    end
    if #stale == 0 then
        return
    end
    local marks, in_mysql = {}, {}
    for i, s in ipairs(stale) do
        marks[i] = "?"
    end
    local ids = {}
    for i, s in ipairs(stale) do
        ids[i] = s[2]
    end
    local rows, err = mysql.query("SELECT order_id FROM orders WHERE order_id IN (" .. table.concat(marks, ",") .. ")",
        table.unpack(ids))
    if rows == nil then
        return log.warn("sweeper: mysql: " .. tostring(err))
    end
    for _, r in ipairs(rows) do
        in_mysql[r.order_id] = true
    end
    local unproven = {}
    for _, s in ipairs(stale) do
        if in_mysql[s[2]] then
            settle(s[1], s[2], true)
        else
            unproven[#unproven + 1] = s
        end
    end
    if #unproven == 0 then
        return
    end
    local passed, berr = M.barrier(S.barrier_timeout_ms)
    if not passed then
        return warn_every("sweep", 30000, "sweeper: " .. #unproven .. " stale order(s) wait: " .. tostring(berr))
    end
    -- after the barrier, an order that was on the topic is in MySQL; ask again, then release the rest
    for _, s in ipairs(unproven) do
        local again = mysql.query("SELECT 1 AS x FROM orders WHERE order_id = ?", s[2])
        if again ~= nil then
            local res = settle(s[1], s[2], #again > 0)
            if res == 2 then
                shared.delete(common.soldout_key(s[1]))
                log.warn("sweeper: order " .. s[2] .. " of " .. s[1] .. " never reached Kafka; its stock is released")
                metrics.add("seckilld_orders_released_total", 1)
            end
        end
    end
end

-- ===== audit =====
-- KEYS: meta, stock, sold, queued; the units of the orders still queued are summed from their hashes
local AUDIT = common.redis_script("audit")

-- the audit table, or nil, status, code, message
function M.audit(item)
    local r, err = redis.evalsha(AUDIT, { K.meta(item), K.stock(item), K.sold(item), K.queued(item) }, {})
    if type(r) ~= "table" then
        return nil, 503, "unavailable", "redis is unavailable: " .. tostring(err)
    end
    if not r[1] then
        return nil, 404, "unknown_item", "no such item"
    end
    local armed_at = common.int_or_nil(r[2]) or 0
    local rows, merr = mysql.query("SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) AS units, COUNT(*) AS n "
        .. "FROM orders WHERE item_id = ? AND created_at >= FROM_UNIXTIME(? / 1000)", item, armed_at)
    if rows == nil then
        return nil, 503, "unavailable", "mysql is unavailable: " .. tostring(merr)
    end
    local sold = common.int_or_nil(r[5]) or 0
    local persisted = math.tointeger(rows[1].units) or 0
    local audit = {
        item_id = item,
        rebuilding = r[3] and true or false,
        redis = {
            stock_initial = common.int_or_nil(r[1]), stock_left = common.int_or_nil(r[4]) or 0, sold = sold,
            queued_orders = r[6], queued_units = r[7], queued_without_key = r[8],
        },
        mysql = { persisted_units = persisted, persisted_orders = math.tointeger(rows[1].n) or 0 },
        -- units sold in Redis that are neither in MySQL nor on their way there; 0 when the books agree
        drift = sold - persisted - r[7],
    }
    local status = kafka.consumer_status and kafka.consumer_status() or nil
    audit.consumer = status or json.null
    metrics.gauge("seckilld_books_drift_units", audit.drift, { item = item })
    return audit
end

return M
