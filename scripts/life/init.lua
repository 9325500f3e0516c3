-- life: the order's life after the buy (API-v1.2.md "The order's life"): queued → created → paid | cancelled |
-- expired, the last three final.
--
--   life.find(id)               the order's MySQL row, persisting a queued order first (below); or nil and "unknown"
--                               or "unavailable" (and the error)
--   life.view(row)              the order as the API shows it
--   life.expires_at(item, created_at)   the deadline of an order of `item` (ms), or nil without a payment step
--   life.cancel(row, user)      cancels a created order → the row after (its status says who won)
--   life.expire(id)             expires one order that is due (a payment or a cancel that came too late decides it)
--   life.release / life.expire_task / life.payments   the parts: release.lua, expire.lua, payments.lua
--
-- Where the decision lives. Every transition is decided in the order's MySQL row, and only there: a guarded
-- `UPDATE … WHERE status = 'created'` (and `expires_at` after or before now, by this server's clock), or, for a
-- payment, a transaction holding the row (`FOR UPDATE`) that writes the order and the `payments` record together.
-- InnoDB's row lock makes the guarded statements of a payment, a cancel and an expiry for one order run one after
-- another, so exactly one finds the order `created` and wins; the others find it final and lose (a losing payment is
-- refund_due). A `queued` order (not yet in MySQL) is first persisted here, as the consumer would: claimed in Redis
-- (queued → persisting, so no compensation takes it back) and inserted (the consumer's later insert is a no-op).
--
-- Then, for a cancelled or expired order, its units go back (release.lua): a Redis script per stock bucket that gives
-- them back only if the order's release marker is not there yet, and writes it; then `released = 1` in the row. Each
-- step is safe to repeat and the process may die between any two:
--   * after the decision, before the release: the row is final with released = 0; every process's expire task
--     (expire.lua) finds such rows and releases them;
--   * after the release, before `released = 1`: the marker makes the next release give nothing back;
--   * Redis loses its data (markers too): the rebuild (books/rebuild.lua) counts only created and paid orders, and
--     writes the marker of every final order not yet marked released, while the item is paused, so a release that
--     comes after it gives nothing back again; a decision that comes after the rebuild read the row is released by
--     the task once the item reopens (the release script waits while the item is being rebuilt).
local common = require "common"
local B = require "common.buckets"
local items = require "common.items"
local release = require "life.release"
local K = common.keys

local M = {}
M.release = release

local CLAIM = common.redis_script("claim_ahead")
local CREATED = common.redis_script("created")

M.cancelled = metrics.counter("seckilld_orders_cancelled_total")
M.expired = metrics.counter("seckilld_orders_expired_total")

local function iso(ms)
    return os.date("!%Y-%m-%dT%H:%M:%S", ms // 1000) .. string.format(".%03dZ", ms % 1000)
end
M.iso = iso

M.COLUMNS = "order_id, item_id, user_id, quantity, status, expires_at, released, "
    .. "CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED) AS created_ms FROM orders "

function M.view(row)
    local expires = row.expires_at
    return {
        order_id = row.order_id, item_id = row.item_id, user_id = row.user_id, quantity = row.quantity,
        status = row.status, created_at = iso(row.created_ms),
        expires_at = (expires ~= nil and expires ~= mysql.null) and expires or json.null,
    }
end

function M.expires_at(item, created_at)
    return items.expires_at(items.get(item), created_at)
end

local function row_of(id)
    local rows, err = mysql.query("SELECT " .. M.COLUMNS .. "WHERE order_id = ?", id)
    if rows == nil then
        return nil, "unavailable", "mysql: " .. tostring(err)
    end
    return rows[1] or false
end
M.row = row_of

-- the bucket tag whose queued set holds a user's order (common/buckets.lua), or nil and an error
local function tag_of(item, user)
    local s, err = items.get(item)
    if s == nil then
        return nil, "redis: " .. tostring(err)
    end
    return B.tag(item, B.of_user(user, s and s.buckets or 1))
end
M.tag_of = tag_of

-- a queued order into MySQL ahead of the consumer: true, or nil and "unknown" / "unavailable"
local function persist(id)
    local h, err = redis.call("HMGET", K.order(id), "item_id", "user_id", "quantity", "status", "created_at")
    if type(h) ~= "table" then
        return nil, "unavailable", "redis: " .. tostring(err)
    end
    if not h[4] or h[4] == "compensated" then
        return nil, "unknown" -- never accepted, or given back; or lost with Redis's data (the consumer brings it)
    end
    local item, user = h[1], h[2]
    local tag, terr = tag_of(item, user)
    if tag == nil then
        return nil, "unavailable", terr
    end
    if redis.cluster and redis.slot(K.order(id)) ~= redis.slot(K.queued(tag)) then
        return nil, "unavailable", "order " .. id .. " is not in its bucket's slot (an order of an earlier set-up)"
    end
    local claimed, cerr = redis.evalsha(CLAIM, { K.order(id), K.queued(tag), K.meta(tag) }, { id })
    if claimed == -1 then
        return nil, "unavailable", "the item is being rebuilt after redis lost data; retry shortly"
    elseif claimed == 0 then
        return nil, "unknown" -- given back meanwhile, or dropped by a rebuild: it never reached the topic
    elseif claimed ~= 1 then
        return nil, "unavailable", "redis: " .. tostring(cerr)
    end
    local created = math.tointeger(tonumber(h[5])) or 0
    local settings, serr = items.get(item)
    if settings == nil then
        return nil, "unavailable", "redis: " .. tostring(serr)
    end
    local expires = items.expires_at(settings, created)
    local res, merr = mysql.query("INSERT INTO orders (order_id, item_id, user_id, quantity, status, created_at, "
        .. "expires_at) VALUES (?, ?, ?, ?, 'created', FROM_UNIXTIME(? / 1000), ?) "
        .. "ON DUPLICATE KEY UPDATE order_id = order_id",
        id, item, user, math.tointeger(tonumber(h[3])), created, expires or mysql.null)
    if res == nil then
        return nil, "unavailable", "mysql: " .. tostring(merr)
    end
    -- as the consumer marks what it wrote (a failure here is tidied by the consumer or the sweeper)
    redis.evalsha(CREATED, { K.order(id), K.queued(tag) }, { id, common.order_ttl(expires) })
    return true
end
M.persist = persist

function M.find(id)
    local row, why, err = row_of(id)
    if row == nil then
        return nil, why, err
    end
    if row then
        return row
    end
    local ok
    ok, why, err = persist(id)
    if not ok then
        return nil, why, err
    end
    row, why, err = row_of(id)
    if not row then
        return nil, why or "unknown", err
    end
    return row
end

-- expires order `id` if it is due (by this server's clock); true when this call expired it
function M.expire(id)
    local t = math.floor(now())
    local r, err = mysql.query("UPDATE orders SET status = 'expired', ended_at = ? "
        .. "WHERE order_id = ? AND status = 'created' AND expires_at <= ?", t, id, t)
    if r == nil then
        return nil, "mysql: " .. tostring(err)
    end
    if r.affected_rows == 1 then
        M.expired(1)
        return true
    end
    return false
end

-- releases a final order's units now (the expire task is the backstop when this fails)
function M.release_now(row)
    local ok, err = release.orders { row }
    if not ok then
        log.warn("release of order " .. row.order_id .. " postponed (the expire task retries): " .. tostring(err))
    end
end

-- cancels `row` if it is still created and not due; returns the row as it is after (status created never: a due order
-- is expired first), or nil and the error
function M.cancel(row)
    if row.status ~= "created" then
        return row
    end
    local t = math.floor(now())
    local r, err, errno
    for _ = 1, 3 do -- a deadlock with the expire task's statement (both lock this row and its index entry) is retried
        r, err, errno = mysql.query("UPDATE orders SET status = 'cancelled', ended_at = ? WHERE order_id = ? AND "
            .. "status = 'created' AND (expires_at IS NULL OR expires_at > ?)", t, row.order_id, t)
        if r ~= nil or (errno ~= 1213 and errno ~= 1205) then
            break
        end
    end
    if r == nil then
        return nil, "mysql: " .. tostring(err)
    end
    if r.affected_rows == 0 then
        local _, eerr = M.expire(row.order_id) -- due: the expiry wins, now rather than at the task's next round
        if eerr then
            return nil, eerr
        end
    else
        M.cancelled(1)
    end
    local after, _, rerr = row_of(row.order_id)
    if not after then
        return nil, rerr or "the order vanished"
    end
    if after.status == "cancelled" or after.status == "expired" then
        M.release_now(after)
    end
    return after
end

return M
