-- token.lua: POST /seckill/token — a signed purchase token for an item that requires one (API.md "Admission").
-- Issued only while the sale window is open and to a user who has not bought the limit yet; the buy checks it
-- without a Redis round trip (admission/tokens.lua).
local common = require "common"
local admission = require "admission"
local items = require "common.items"
local request = require "sale.request"
local K = common.keys

local M = {}

local tokens = admission.tokens
local issued = metrics.counter("seckilld_tokens_issued_total")

function M.issue(req)
    local item, user = common.item_and_user(req)
    if item == nil then
        return common.bad_request(user)
    end
    local status, refusal, headers = admission.admit(req, item, user, nil, false)
    if status then
        return status, refusal, headers
    end
    if not tokens.configured() then
        return common.unavailable("purchase tokens are not configured on this server (token_secret)")
    end
    local s, serr = items.get(item)
    if s == nil then
        return common.unavailable("redis is unavailable: " .. tostring(serr))
    elseif s == false then
        if common.known_item(item) then -- its keys vanished from Redis: being rebuilt (books/loss.lua)
            common.ask_rebuild(item)
            return common.unavailable("the item is being rebuilt after redis lost data; retry shortly")
        end
        return common.fail(404, "unknown_item", "no such item")
    end
    if s.waiting_room then -- its tokens are the waiting room's passes, given in queue order (POST /queue/join)
        return common.fail(403, "queue_required", "this item is sold through its waiting room: POST /queue/join")
    end
    local t = now()
    if s.starts_at and t < s.starts_at then
        return 403, request.not_started_body(item)
    end
    if s.ends_at and t >= s.ends_at then
        return common.fail(403, "ended", "the sale has ended")
    end
    local bought, berr = redis.call("HGET", K.users(item), user)
    if bought == nil and berr ~= nil then
        return common.unavailable("redis is unavailable: " .. tostring(berr))
    end
    if (common.int_or_nil(bought) or 0) >= s.limit then
        return common.fail(409, "limit_exceeded", "this user already bought the limit of this item")
    end
    local token, expires_at = tokens.issue(item, user, s.token_ttl_ms)
    issued()
    return 200, { ok = true, token = token, expires_at = expires_at }
end

return M
