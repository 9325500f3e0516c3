-- books/audit.lua: an item's books in Redis beside MySQL's, and the drift between them.
local common = require "common"
local B = require "common.buckets"
local K = common.keys

local M = {}

-- ===== audit =====
-- KEYS: meta, stock, sold, queued; the units of the orders still queued are summed from their hashes
local AUDIT = common.redis_script("audit")

-- the audit table, or nil, status, code, message
local function audit_of(tag)
    return redis.evalsha(AUDIT, { K.meta(tag), K.stock(tag), K.sold(tag), K.queued(tag) }, {})
end

function M.item(item)
    local r, err = audit_of(item)
    if type(r) ~= "table" then
        return nil, 503, "unavailable", "redis is unavailable: " .. tostring(err)
    end
    if not r[1] then
        return nil, 404, "unknown_item", "no such item"
    end
    -- a bucketed item (common/buckets.lua): the other buckets' stock, sold and queued orders add up (the home meta's
    -- stock_initial is the whole item's)
    for b = 1, r[9] - 1 do
        local br, berr = audit_of(B.tag(item, b))
        if type(br) ~= "table" then
            return nil, 503, "unavailable", "redis is unavailable: " .. tostring(berr)
        end
        r[3] = r[3] or br[3] -- a bucket being rebuilt
        for i = 4, 8 do
            r[i] = (tonumber(r[i]) or 0) + (tonumber(br[i]) or 0)
        end
    end
    local armed_at = common.int_or_nil(r[2]) or 0
    -- v1.2 (life/): a cancelled or expired order holds its units until it is released; Redis's sold counts the units
    -- of the orders that hold some
    local rows, merr = mysql.query("SELECT CAST(COALESCE(SUM(IF(released = 0, quantity, 0)), 0) AS SIGNED) AS units, "
        .. "CAST(COALESCE(SUM(IF(released = 1, quantity, 0)), 0) AS SIGNED) AS released, COUNT(*) AS n "
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
        mysql = { persisted_units = persisted, persisted_orders = math.tointeger(rows[1].n) or 0,
                  released_units = math.tointeger(rows[1].released) or 0 },
        -- units sold in Redis that are neither in MySQL nor on their way there; 0 when the books agree
        drift = sold - persisted - r[7],
    }
    local status = kafka.consumer_status and kafka.consumer_status() or nil
    audit.consumer = status or json.null
    metrics.gauge("seckilld_books_drift_units", audit.drift, { item = item })
    return audit
end

return M
