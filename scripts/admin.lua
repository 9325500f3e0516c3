-- admin.lua: PUT/GET /admin/items/{item_id}, behind the bearer token from the config.
local common = require "common"
local audit = require "books.audit"
local loss = require "books.loss"
local admission = require "admission"
local buckets = require "common.buckets"
local items = require "common.items"
local queue = require "admission.queue"
local K = common.keys

local M = {}

local token = config.admin_token
if type(token) ~= "string" or #token < 1 then
    error("config.admin_token must be a non-empty string")
end
local expected = "Bearer " .. token

local function authorized(req)
    local h = req.headers["authorization"]
    return type(h) == "string" and crypto.equal(h, expected) -- constant time: the timing tells nothing
end

-- an item's view shows its admission settings only where it has any: a plain item reads as it did in v1
local function with_admission(item, a, armed_at)
    if a.require_token then
        item.require_token, item.token_ttl_ms = true, math.tointeger(a.token_ttl_ms) or 10000
    end
    if a.max_rps then
        item.max_rps = a.max_rps
    end
    if (a.buckets or 1) > 1 then
        item.buckets = a.buckets
    end
    if (a.price or 0) > 0 then -- v1.2: the payment step (life/)
        item.price = a.price
    end
    if (a.pay_within_s or 0) > 0 then
        item.pay_within_s = a.pay_within_s
    end
    local room = items.waiting_room(a)
    if room then -- v1.2: the waiting room (queue/), with how many wait and how many were let in
        item.waiting_room = room
        local starts_at = math.type(item.starts_at) == "integer" and item.starts_at or nil
        local counts = queue.counts(item.item_id, room, starts_at, armed_at)
        if counts then
            item.waiting, item.admitted, item.admit_per_s = counts.waiting, counts.admitted, counts.admit_per_s
        end
    end
    return item
end

M.authorized = authorized -- stats.lua's route is behind the same token

local function guard(handler)
    return function(req)
        if not authorized(req) then
            return common.fail(401, "unauthorized", "a valid admin bearer token is required")
        end
        if not common.valid_id(req.params.item_id) then
            return common.bad_request("item_id must be 1-64 characters of A-Za-z0-9_.:-")
        end
        return handler(req)
    end
end

-- the v1.1 admission fields of a PUT body (or of a config.items entry): settings, or nil and what is wrong
function M.admission_settings(body)
    local s = { require_token = false, token_ttl_ms = 10000 }
    if body.require_token ~= nil and body.require_token ~= json.null then
        if type(body.require_token) ~= "boolean" then
            return nil, "require_token must be true or false"
        end
        if body.require_token and not admission.tokens.configured() then
            return nil, "require_token needs a token_secret in the config (or SECKILLD_TOKEN_SECRET)"
        end
        s.require_token = body.require_token
    end
    if body.token_ttl_ms ~= nil and body.token_ttl_ms ~= json.null then
        s.token_ttl_ms = common.whole(body.token_ttl_ms, 1000, 86400000)
        if s.token_ttl_ms == nil then
            return nil, "token_ttl_ms must be a whole number of milliseconds from 1000 to 86400000"
        end
    end
    if body.max_rps ~= nil and body.max_rps ~= json.null then
        if type(body.max_rps) ~= "number" or body.max_rps ~= body.max_rps or body.max_rps <= 0
            or body.max_rps > 1000000000 then
            return nil, "max_rps must be a number of requests per second above 0"
        end
        s.max_rps = body.max_rps
    end
    if body.buckets ~= nil and body.buckets ~= json.null then
        -- the stock spread over that many keys, each its own slot on a Redis Cluster (common/buckets.lua)
        s.buckets = common.whole(body.buckets, 1, buckets.MAX)
        if s.buckets == nil then
            return nil, "buckets must be a whole number from 1 to " .. buckets.MAX
        end
    end
    -- v1.2, the order's life (life/): what a unit costs (a payment's amount is checked) and how long an order may
    -- stay unpaid before it expires and its units go back on sale
    if body.price ~= nil and body.price ~= json.null then
        s.price = common.whole(body.price, 0, 2 ^ 53)
        if s.price == nil then
            return nil, "price must be a whole number of minor units from 0"
        end
    end
    if body.pay_within_s ~= nil and body.pay_within_s ~= json.null then
        s.pay_within_s = common.whole(body.pay_within_s, 0, 86400)
        if s.pay_within_s == nil then
            return nil, "pay_within_s must be a whole number of seconds from 0 to 86400"
        end
    end
    if body.waiting_room ~= nil and body.waiting_room ~= json.null then
        -- v1.2: buyers wait their turn (queue/); the pass they get is a purchase token, so the server must sign them
        local w = body.waiting_room
        if type(w) ~= "table" then
            return nil, "waiting_room must be an object {admit_per_s, pass_ttl_s}"
        end
        local rate, ttl = common.whole(w.admit_per_s, 1, 100000), common.whole(w.pass_ttl_s or 300, 10, 3600)
        if rate == nil then
            return nil, "waiting_room.admit_per_s must be a whole number of buyers per second from 1 to 100000"
        end
        if ttl == nil then
            return nil, "waiting_room.pass_ttl_s must be a whole number of seconds from 10 to 3600"
        end
        if not admission.tokens.configured() then
            return nil, "waiting_room needs a token_secret in the config (or SECKILLD_TOKEN_SECRET): its passes are "
                .. "purchase tokens"
        end
        s.waiting_room = { admit_per_s = rate, pass_ttl_s = ttl }
    end
    return s
end

M.put = guard(function(req)
    local body, err = common.json_object(req)
    if body == nil then
        return common.bad_request(err)
    end
    local stock = common.whole(body.stock, 0, 1000000000)
    if stock == nil then
        return common.bad_request("stock is required: a whole number from 0 to 10^9")
    end
    local limit = 1
    if body.limit_per_user ~= nil then
        limit = common.whole(body.limit_per_user, 1, 1000000000)
        if limit == nil then
            return common.bad_request("limit_per_user must be a whole number of at least 1")
        end
    end
    local starts_at, ends_at
    for _, f in ipairs { "starts_at", "ends_at" } do
        if body[f] ~= nil and body[f] ~= json.null then
            local v = common.whole(body[f], 0, 2 ^ 53)
            if v == nil then
                return common.bad_request(f .. " must be a time in milliseconds since the epoch")
            end
            if f == "starts_at" then starts_at = v else ends_at = v end
        end
    end
    if starts_at and ends_at and ends_at <= starts_at then
        return common.bad_request("ends_at must be after starts_at")
    end
    local settings, aerr = M.admission_settings(body)
    if settings == nil then
        return common.bad_request(aerr)
    end
    local id = req.params.item_id
    local item, serr, armed_at = common.setup_item(id, stock, limit, starts_at, ends_at, false,
        items.encode(settings))
    if item == nil then
        return common.unavailable("the item could not be set up: " .. tostring(serr))
    end
    items.changed(id)
    -- every process that trusts its list of items has listed this one by now (common/items.lua): none answers 404
    sleep(common.LIST_FRESH_MS + common.LIST_MS)
    return 200, { ok = true, item = with_admission(item, settings, armed_at) }
end)

-- An item without meta that MySQL knows vanished from Redis with the epoch intact (a key deleted or evicted): it is
-- paused for a rebuild now (books/loss.lua, as its watcher would within a round), and viewed as any item being
-- rebuilt (one set up seconds ago is left to the watcher: its set-up may be under way). Returns true when MySQL knows
-- it (look again), false when not (404), or nil and the answer.
local function vanished(id)
    local marked, known = loss.repair { id }
    if marked == nil then
        if common.known_item(id) then
            common.ask_rebuild(id)
            return nil, common.unavailable("the item is being rebuilt after redis lost data; retry shortly")
        end
        return nil, common.unavailable("mysql or redis is unavailable: " .. tostring(known))
    end
    return known[id] == true
end

local function view(id, again)
    local r, err = redis.pipeline(function(p)
        p:call("HMGET", K.meta(id), "stock_initial", "limit_per_user", "starts_at", "ends_at", "armed_at", "admission")
        p:call("GET", K.stock(id))
        p:call("GET", K.sold(id))
    end)
    if r == nil then
        return common.unavailable("redis is unavailable")
    end
    local meta = r[1][1]
    if type(meta) ~= "table" or not meta[1] then
        if again then -- MySQL knows it, and it is not on Redis's books yet
            return common.unavailable("the item is being set up or rebuilt; retry shortly")
        elseif type(meta) == "table" then
            local known, status, body = vanished(id)
            if known then
                return view(id, true)
            elseif known == nil then
                return status, body
            end
        end
        if common.configured(id) then -- declared in the config, and app.init has not set it up yet
            return common.unavailable("the item is being set up; retry shortly")
        end
        return common.fail(404, "unknown_item", "no such item")
    end
    local armed_at = common.int_or_nil(meta[5]) or 0
    local a = items.decode(meta[6])
    local stock_left, sold = common.int_or_nil(r[2][1]) or 0, common.int_or_nil(r[3][1]) or 0
    local k = common.buckets_in(meta[6])
    if k > 1 then -- the other buckets' stock and sold (one pipeline per slot on a cluster)
        local tags = {}
        for b = 1, k - 1 do
            tags[b] = buckets.tag(id, b)
        end
        for _, group in ipairs(common.by_slot(tags, K.stock)) do
            local br, berr = redis.pipeline(function(p)
                for _, tag in ipairs(group) do
                    p:call("GET", K.stock(tag))
                    p:call("GET", K.sold(tag))
                end
            end)
            if br == nil then
                return common.unavailable("redis is unavailable: " .. tostring(berr))
            end
            for j = 1, #group do
                stock_left = stock_left + (common.int_or_nil(br[2 * j - 1][1]) or 0)
                sold = sold + (common.int_or_nil(br[2 * j][1]) or 0)
            end
        end
    end
    -- units persisted since this set-up (orders of an earlier set-up of the same id are not this sale's), and of
    -- those the units paid and the units released (cancelled or expired, back on sale)
    local rows, merr = mysql.query("SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) AS units, "
        .. "CAST(COALESCE(SUM(IF(status = 'paid', quantity, 0)), 0) AS SIGNED) AS paid, "
        .. "CAST(COALESCE(SUM(IF(released = 1, quantity, 0)), 0) AS SIGNED) AS released FROM orders "
        .. "WHERE item_id = ? AND created_at >= FROM_UNIXTIME(? / 1000)", id, armed_at)
    if rows == nil then
        return common.unavailable("mysql is unavailable: " .. tostring(merr))
    end
    return 200, {
        ok = true,
        item = with_admission({
            item_id = id,
            stock_initial = common.int_or_nil(meta[1]),
            stock_left = stock_left,
            sold = sold,
            orders_persisted = math.tointeger(rows[1].units) or 0,
            paid = math.tointeger(rows[1].paid) or 0,
            released = math.tointeger(rows[1].released) or 0,
            limit_per_user = common.int_or_nil(meta[2]),
            starts_at = common.int_or_nil(meta[3]) or json.null,
            ends_at = common.int_or_nil(meta[4]) or json.null,
        }, a, armed_at),
    }
end

M.get = guard(function(req)
    return view(req.params.item_id)
end)

-- Redis's books beside MySQL's: what is sold, persisted, still on its way, and the drift between them
M.audit = guard(function(req)
    local id = req.params.item_id
    local a, status, code, message = audit.item(id)
    if a == nil and code == "unknown_item" then
        local known, vstatus, body = vanished(id)
        if known then
            a, status, code, message = audit.item(id)
            if a == nil and code == "unknown_item" then
                return common.unavailable("the item is being set up or rebuilt; retry shortly")
            end
        elseif known == nil then
            return vstatus, body
        end
    end
    if a == nil then
        return common.fail(status, code, message)
    end
    return 200, { ok = true, audit = a }
end)

return M
