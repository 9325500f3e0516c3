-- waiting.lua: the waiting room's routes (API v1.2 "Waiting room"): POST /queue/join and GET /queue/status. The room
-- itself (places, the draw, the admission clock, tickets) is admission/queue.lua; the page a person waits on is
-- docs/ (GET /queue/{item_id}).
local common = require "common"
local admission = require "admission"
local queue = require "admission.queue"

local M = {}

local function answer(body, status, code, message)
    if body == nil then
        return common.fail(status, code, message)
    end
    return 200, body
end

-- POST /queue/join {"item_id","user_id"}: a place (the same one again for a user who joined before)
function M.join(req)
    local item, user = common.item_and_user(req)
    if item == nil then
        return common.bad_request(user)
    end
    req:annotate { item_id = item, user_id = user }
    -- a join counts against the client's and the user's rate limits (config.limits), as a buy does: a script making up
    -- users cannot fill the room (or the draw) faster than they allow
    local kind, wait = admission.limits.check(req, item, user)
    if kind then
        return admission.busy(kind, wait)
    end
    return answer(queue.join(item, user))
end

-- GET /queue/status?ticket=T[&item_id=I][&user_id=U]: where the ticket's holder stands, from the ticket itself
function M.status(req)
    local q = req.query or {}
    local ticket = q.ticket
    if type(ticket) ~= "string" or ticket == "" then
        return common.bad_request("the ticket query parameter is required (the join's ticket)")
    end
    return answer(queue.status(ticket, q.item_id, q.user_id))
end

return M
