-- orders.lua: GET /order/{order_id} and GET /orders?user_id=U.
local common = require "common"
local K = common.keys

local M = {}

local function iso(ms)
    return os.date("!%Y-%m-%dT%H:%M:%S", ms // 1000) .. string.format(".%03dZ", ms % 1000)
end

local function from_row(row)
    return {
        order_id = row.order_id, item_id = row.item_id, user_id = row.user_id, quantity = row.quantity,
        status = "created", created_at = iso(row.created_ms),
    }
end

local SELECT = "SELECT order_id, item_id, user_id, quantity, "
    .. "CAST(UNIX_TIMESTAMP(created_at) * 1000 AS SIGNED) AS created_ms FROM orders "

function M.get(req)
    local id = req.params.order_id
    if not common.valid_id(id) then
        return common.fail(404, "unknown_order", "no such order")
    end
    -- Redis knows accepted orders first; MySQL is the record once the consumer wrote it
    local h, err = redis.call("HMGET", K.order(id), "item_id", "user_id", "quantity", "status", "created_at")
    if h == nil then
        log.warn("redis unavailable for an order lookup: " .. tostring(err))
    end
    local status = h and h[4] or nil -- a missing field is false inside a Redis array
    if status == "created" or status == nil then
        local rows, merr = mysql.query(SELECT .. "WHERE order_id = ?", id)
        if rows == nil then
            if status == nil then
                return common.unavailable("the order store is unavailable")
            end
        elseif rows[1] then
            return 200, { ok = true, order = from_row(rows[1]) }
        end
        if status == nil then
            return common.fail(404, "unknown_order", "no such order")
        end
    end
    -- "queued" or "persisting": accepted, not yet in MySQL
    return 200, {
        ok = true,
        order = {
            order_id = id, item_id = h[1], user_id = h[2], quantity = math.tointeger(tonumber(h[3])),
            status = status == "created" and "created" or "queued",
            created_at = iso(math.tointeger(tonumber(h[5])) or 0),
        },
    }
end

function M.list(req)
    local user = req.query.user_id
    if not common.valid_id(user) then
        return common.bad_request("user_id must be 1-64 characters of A-Za-z0-9_.:-")
    end
    local rows, err = mysql.query(SELECT .. "WHERE user_id = ? ORDER BY created_at DESC, order_id LIMIT 100", user)
    if rows == nil then
        return common.unavailable("the order store is unavailable")
    end
    local orders = {}
    for i, row in ipairs(rows) do
        orders[i] = from_row(row)
    end
    if #orders == 0 then
        return 200, '{"ok":true,"orders":[]}' -- lua-cjson 2.1.0 would encode an empty table as {}
    end
    return 200, { ok = true, orders = orders }
end

return M
