-- admission: who may try to buy, before any stock is looked at (API.md "Admission").
--
--   admission.admit(req, item_id, user_id, token, needs_token)
--       → nil when the request may go on, or the answer (status, body, headers) refusing it: 429 busy (a rate
--         limit), 403 bad_token (the item requires a purchase token and this one is not good), 503 (Redis cannot
--         tell the item's settings)
--
-- Parts: limits.lua (token buckets), tokens.lua (signed purchase tokens), idempotency.lua (Idempotency-Key), queue.lua
-- (the waiting room, whose passes are purchase tokens); the item's settings, cached, are common/items.lua.
local common = require "common"
local limits = require "admission.limits"
local tokens = require "admission.tokens"
local items = require "common.items"

local M = {}
M.limits, M.tokens = limits, tokens

local token_refused = {}
for _, why in ipairs { "missing", "malformed", "expired", "forged" } do
    token_refused[why] = metrics.counter("seckilld_tokens_refused_total", { reason = why })
end

local function busy(kind, wait)
    local after = math.max(1, math.ceil(wait or 1))
    return 429, { ok = false, error = "busy", limit = kind, message = "rate limit (" .. kind .. ") exceeded; retry after "
        .. after .. " s" }, { ["retry-after"] = tostring(after) }
end

M.busy = busy

-- nil when the request may go on, else the answer refusing it
function M.admit(req, item_id, user_id, token, needs_token)
    local kind, wait = limits.check(req, item_id, user_id)
    if kind then
        return busy(kind, wait)
    end
    local settings, err = items.get(item_id)
    if settings == nil then
        return common.unavailable("redis is unavailable: " .. tostring(err) .. "; nothing was taken")
    end
    if settings then
        kind, wait = limits.check_item(req, item_id, settings.max_rps)
        if kind then
            return busy(kind, wait)
        end
        -- a waiting room's pass is a purchase token (admission/queue.lua): its items require one
        if needs_token and (settings.require_token or settings.waiting_room) then
            local ok, why = tokens.verify(token, item_id, user_id)
            if not ok then
                token_refused[why]()
                return common.fail(403, "bad_token", "this item requires a valid purchase token (" .. why .. ")")
            end
        end
    end
    return nil
end

return M
