-- sale/request.lua: what buy.lua reads from a request and how it answers a refusal (API.md): the request's order
-- and purchase token, and the status, error code and message of every reason a buy took nothing (token.lua answers
-- not_started with the same body).
local common = require "common"
local items = require "common.items"

local M = {}

-- why a buy took nothing: status, error code, message (API.md)
M.REFUSALS = {
    unknown_item = { 404, "unknown_item", "no such item" },
    not_started = { 403, "not_started", "the sale has not started" },
    ended = { 403, "ended", "the sale has ended" },
    quantity_over_limit = { 400, "bad_request", "quantity exceeds the item's limit per user" },
    limit_exceeded = { 409, "limit_exceeded", "this user already bought the limit of this item" },
    sold_out = { 409, "sold_out", "not enough stock left" },
    lost = { 503, "unavailable", "redis lost its data; the item is being rebuilt" },
    rebuilding = { 503, "unavailable", "the item is being rebuilt after redis lost data; retry shortly" },
    busy = { 429, "busy", "too much contention on this item; retry" },
    unavailable = { 503, "unavailable", "redis is unavailable; nothing was taken" },
}

-- a 403 not_started answer's body, with starts_at and now, for skewed clocks
function M.not_started_body(item_id)
    local s = items.get(item_id)
    return { ok = false, error = "not_started", message = "the sale has not started",
             starts_at = s and s.starts_at or json.null, now = math.floor(now()) }
end

function M.refuse(code, order)
    if code == "not_started" then
        return 403, M.not_started_body(order.item_id)
    end
    local r = M.REFUSALS[code]
    return common.fail(r[1], r[2], r[3])
end

-- the order a request asks for and the purchase token it carries, or nil and what is wrong with it
function M.order(req)
    local body, err = common.json_object(req)
    if body == nil then
        return nil, err
    end
    if not common.valid_id(body.item_id) then
        return nil, "item_id must be 1-64 characters of A-Za-z0-9_.:-"
    end
    if not common.valid_id(body.user_id) then
        return nil, "user_id must be 1-64 characters of A-Za-z0-9_.:-"
    end
    local quantity = 1
    if body.quantity ~= nil and body.quantity ~= json.null then
        quantity = common.whole(body.quantity, 1, 1000000000)
        if quantity == nil then
            return nil, "quantity must be a whole number of at least 1"
        end
    end
    return {
        item_id = body.item_id, user_id = body.user_id, quantity = quantity,
        created_at = math.floor(now()),
    }, nil, body.token
end

return M
