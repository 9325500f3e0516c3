-- orders.lua: GET /order/{order_id}, GET /orders?user_id=U and POST /order/{order_id}/cancel (the order's life:
-- life/).
local common = require "common"
local life = require "life"
local K = common.keys

local M = {}

local iso, from_row = life.iso, life.view
local SELECT = "SELECT " .. life.COLUMNS

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
    if status ~= "queued" then -- created, persisting (perhaps persisted ahead of the consumer: life/), or unknown
        local rows, merr = mysql.query(SELECT .. "WHERE order_id = ?", id)
        if rows == nil then
            if status == nil then
                return common.unavailable("the order store is unavailable")
            end
        elseif rows[1] then
            return 200, { ok = true, order = from_row(rows[1]) }
        end
        if status == nil or status == "compensated" then -- never accepted, or given back
            return common.fail(404, "unknown_order", "no such order")
        end
    end
    -- "queued" or "persisting": accepted, not yet in MySQL
    local created = math.tointeger(tonumber(h[5])) or 0
    return 200, {
        ok = true,
        order = {
            order_id = id, item_id = h[1], user_id = h[2], quantity = math.tointeger(tonumber(h[3])),
            status = status == "created" and "created" or "queued",
            created_at = iso(created), expires_at = life.expires_at(h[1], created) or json.null,
        },
    }
end

-- POST /order/{order_id}/cancel {"user_id": U}: the buyer gives the order up; its units go back on sale (life/)
function M.cancel(req)
    local id = req.params.order_id
    local body, err = common.json_object(req)
    if body == nil then
        return common.bad_request(err)
    end
    if not common.valid_id(body.user_id) then
        return common.bad_request("user_id must be 1-64 characters of A-Za-z0-9_.:-")
    end
    if not common.valid_id(id) then
        return common.fail(404, "unknown_order", "no such order")
    end
    local row, why, ferr = life.find(id) -- a queued order is persisted first
    if row == nil and why == "unknown" or row and row.user_id ~= body.user_id then
        return common.fail(404, "unknown_order", "no such order")
    elseif row == nil then
        return common.unavailable("the order store is unavailable: " .. tostring(ferr))
    end
    local after, cerr = life.cancel(row)
    if after == nil then
        return common.unavailable("the order store is unavailable: " .. tostring(cerr))
    end
    local order = from_row(after)
    if after.status == "cancelled" then
        return 200, { ok = true, order = order }
    elseif after.status == "paid" then
        return 409, { ok = false, error = "already_paid", message = "the order is paid", order = order }
    end
    return 409, { ok = false, error = "expired", message = "the order expired unpaid", order = order }
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
