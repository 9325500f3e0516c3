-- admission/queue.lua: an item's waiting room (API v1.2 "Waiting room"): who may try to buy, and when.
--
--   queue.join(item, user)                 → the join's answer (200 body), or nil and status, error, message
--   queue.status(ticket, item, user)       → the poll's answer (200 body), or nil and status, error, message;
--                                            item and user, when given, must be the ticket's
--   queue.counts(item, room, starts_at, armed_at) → { waiting, admitted, admit_per_s }, or nil and an error
--
-- Places. Everyone in the room has a place v (0, 1, ...). Whoever joins before the start is put in a draw: a sorted
-- set scored by an HMAC of the user under the server's secret (no client can compute or retry for a better one, and
-- a user is one member), sealed by the first join or poll after the start; its members hold places 0 .. n-1 in score
-- order, a uniform random permutation. Later joiners take the next place from a counter (redis/queue_join.lua).
--
-- Admission is a function of the clock: place v is admitted at T0 + ceil(v * 1000 / R) ms (T0 the start, R the
-- item's admit_per_s), so any 1000 ms hold at most R admissions, in place order, in every process alike, and a pass
-- that lapses or ends in a refusal takes nothing from later seconds. The ticket carries the place, signed, so a poll
-- needs no Redis: the pass is the purchase token (admission/tokens.lua) expiring at admitted_at + pass_ttl_s, the
-- same token on every poll. Before the draw is sealed a ticket carries no place ("d"): the first poll after the start
-- looks it up (one round trip) and answers a ticket with the place, which the client keeps.
local common = require "common"
local items = require "common.items"
local buckets = require "common.buckets"
local tokens = require "admission.tokens"
local K = common.keys

local M = {}

local JOIN_SCRIPT = common.redis_script("queue_join")
local KEEP_MS = 86400000          -- the room's keys outlive the sale's end (or a week after the start) by a day
local WEEK_MS = 7 * 86400000
local LEFT_TTL_MS = 250           -- how long a process trusts what it read of the stock left (a sold-out poll)
local MAX_TICKET = 256

local joins = metrics.counter("seckilld_queue_joins_total")
local polls = {}
for _, state in ipairs { "waiting", "admitted", "sold_out", "expired" } do
    polls[state] = metrics.counter("seckilld_queue_polls_total", { state = state })
end

local function keys(item, armed_at)
    local base = K.queue(item, armed_at)
    return { base, base .. ":draw", base .. ":late" }
end

-- the room's start: the sale's, or the set-up's for an item without a start
local function start_of(s)
    return s.starts_at or s.armed_at
end

-- the highest place admitted at t (ms), -1 before the start
local function admitted_place(room, t0, t)
    if t < t0 then
        return -1
    end
    return (t - t0) * room.admit_per_s // 1000
end

local function admitted_at(room, t0, place)
    return t0 + (place * 1000 + room.admit_per_s - 1) // room.admit_per_s
end

-- the user's draw score: 52 bits of an HMAC no client can compute (exact in a sorted set's double)
local function score(item, armed_at, user)
    return tonumber(tokens.mac("draw|" .. item .. "|" .. armed_at .. "|" .. user):sub(1, 13), 16)
end

-- a ticket: "q1~<d|p>~<place>~<armed_at>~<item>~<user>~<mac>" ("~" is no id character)
local function signed_text(t)
    return "q1|" .. t.kind .. "|" .. t.place .. "|" .. t.armed_at .. "|" .. t.item .. "|" .. t.user
end

local function ticket_of(t)
    return "q1~" .. t.kind .. "~" .. t.place .. "~" .. t.armed_at .. "~" .. t.item .. "~" .. t.user .. "~"
        .. tokens.mac(signed_text(t))
end

local function parse(ticket)
    if type(ticket) ~= "string" or #ticket > MAX_TICKET then
        return nil
    end
    local kind, place, armed, item, user, mac = ticket:match(
        "^q1~([dp])~(%d+)~(%d+)~([%w_.:%-]+)~([%w_.:%-]+)~(%x+)$")
    if kind == nil or #mac ~= 64 or #place > 15 or #armed > 15 or not common.valid_id(item)
        or not common.valid_id(user) then
        return nil
    end
    local t = { kind = kind, place = math.tointeger(tonumber(place)), armed_at = math.tointeger(tonumber(armed)),
                item = item, user = user }
    if not tokens.mac_ok(mac, signed_text(t)) then
        return nil
    end
    return t
end

-- whether nothing is left of the item: the buys' sold-out mark, else the stock read at most every LEFT_TTL_MS per
-- process (every bucket's, for a bucketed item); nil and an error when Redis cannot tell
function M.sold_out(item, s)
    if shared.get(common.soldout_key(item)) ~= nil then
        return true
    end
    local key = "queue:left:" .. item
    local left = shared.get(key)
    if left == nil then
        left = 0
        for b = 0, (s.buckets or 1) - 1 do
            local v, err = redis.call("GET", K.stock(buckets.tag(item, b)))
            if v == nil and err ~= nil then
                return nil, err
            elseif v == nil or v == false then -- Redis lost it: not sold out, being rebuilt (books/loss.lua)
                common.ask_rebuild(item)
                return nil, "the item is being rebuilt after redis lost data"
            end
            left = left + (common.int_or_nil(v) or 0)
        end
        shared.set(key, left, LEFT_TTL_MS)
    end
    return left <= 0
end

local function retry_after(wait_ms)
    return math.max(math.min(wait_ms // 2, 30000), math.min(wait_ms, 100), 10)
end

-- the state of a placed ticket (kind "p") at t
local function placed(t, s, room, t0, t_now)
    local top = admitted_place(room, t0, t_now)
    if t.place > top then
        local position = t.place - top
        local wait_ms = (position * 1000 + room.admit_per_s - 1) // room.admit_per_s
        return { ok = true, state = "waiting", position = position, estimated_wait_s = (wait_ms + 999) // 1000,
                 retry_after_ms = retry_after(wait_ms) }
    end
    local at = admitted_at(room, t0, t.place)
    local token, expires_at = tokens.issue_until(t.item, t.user, at + room.pass_ttl_s * 1000)
    if t_now >= expires_at then
        -- lapsed: unused unless the user bought (their count, in their bucket)
        local tag = buckets.tag(t.item, buckets.of_user(t.user, s.buckets or 1))
        local bought, err = redis.call("HGET", K.users(tag), t.user)
        if bought == nil and err ~= nil then
            return nil, 503, "unavailable", "redis is unavailable: " .. tostring(err)
        end
        if (common.int_or_nil(bought) or 0) == 0 then
            return { ok = true, state = "expired" }
        end
    end
    return { ok = true, state = "admitted", token = token, expires_at = expires_at, admitted_at = at }
end

-- how many places one reservation in MySQL covers: a Redis loss skips at most that many (at most 5 s of admissions
-- from 20 a second up), and a flood of joins writes MySQL once per that many
local function block(room)
    return math.min(math.max(room.admit_per_s * 5, 100), 10000)
end

-- the place of the ticket's user (a join, or a poll of a ticket from before the draw): "d" and how many are in the
-- draw while it is open, or "p" and the place; nil and an error when Redis or MySQL cannot tell
local function place_of(t, s, room, t0, t_now, register, mode)
    local top = admitted_place(room, t0, t_now)
    local end_ms = (s.ends_at or t0 + WEEK_MS) + KEEP_MS
    local args = { t.user, t.user == "" and 0 or score(t.item, t.armed_at, t.user), top, end_ms, "", "",
                   register or "", t_now, mode or "" }
    for _ = 1, 6 do
        local r, err = redis.evalsha(JOIN_SCRIPT, keys(t.item, t.armed_at), args)
        if type(r) ~= "table" then
            return nil, err
        end
        if r[1] == "f" then -- (re)seal: after every place MySQL reserved
            local rows, merr = mysql.query("SELECT queue_ceiling FROM items WHERE item_id = ? AND armed_at = ?",
                t.item, t.armed_at)
            if rows == nil then
                return nil, "mysql: " .. tostring(merr)
            elseif #rows == 0 then
                return nil, "the item's set-up is not in mysql"
            end
            args[5] = tostring(math.tointeger(rows[1].queue_ceiling) or 0)
        elseif r[1] == "c" then -- reserve the next block of places in MySQL first
            local ceiling = (math.tointeger(r[2]) // block(room) + 2) * block(room)
            local res, merr = mysql.query("UPDATE items SET queue_ceiling = GREATEST(queue_ceiling, ?) "
                .. "WHERE item_id = ? AND armed_at = ?", ceiling, t.item, t.armed_at)
            if res == nil then
                return nil, "mysql: " .. tostring(merr)
            end
            args[6] = tostring(ceiling)
        elseif r[1] == "m" then -- a pre-draw ticket, and Redis lost the draw: MySQL's copy has the place, or not
            local rows, merr = mysql.query("SELECT place FROM queue_draws WHERE item_id = ? AND armed_at = ? "
                .. "AND user_id = ?", t.item, t.armed_at, t.user)
            if rows == nil then
                return nil, "mysql: " .. tostring(merr)
            end
            if #rows > 0 then
                args[7] = tostring(math.tointeger(rows[1].place))
            else
                args[9] = "m"
            end
        else
            return r[1], math.tointeger(r[2])
        end
    end
    return nil, "the queue's reservation kept moving"
end

-- Whether a placed ticket's holder must be registered again: Redis lost the queue (it is gone, or was set up again
-- from MySQL's reservation less than RESTORE_MS ago), so that joining again finds the ticket's place. Each process
-- asks Redis at most once a second per item while the queue is there; false when Redis cannot tell (the ticket
-- answers alone).
local RESTORE_MS = 600000 -- a waiting client polls at least every 30 s
local function lost(t, t_now)
    local key = "queue:restored:" .. t.item .. ":" .. t.armed_at
    local at = shared.get(key)
    if at == nil then
        local r = redis.call("HMGET", keys(t.item, t.armed_at)[1], "sealed", "restored_at")
        if type(r) ~= "table" then
            return false
        elseif not r[1] then
            return true
        end
        at = common.int_or_nil(r[2]) or 0
        shared.set(key, at, 1000)
    end
    return at > 0 and t_now - at < RESTORE_MS
end

-- the answer for a ticket (parsed or just made) of item settings s at t_now: a 200 body, or nil and the error
local function answer(t, s, t_now, fresh)
    local room = s.waiting_room
    if s.ends_at and t_now >= s.ends_at then
        return nil, 403, "ended", "the sale has ended"
    end
    local out, err = M.sold_out(t.item, s)
    if out == nil then
        return nil, 503, "unavailable", "redis is unavailable: " .. tostring(err)
    elseif out then
        return { ok = true, state = "sold_out" }
    end
    local t0 = start_of(s)
    local drawn -- how many are in the draw, while it is open
    if t.kind == "d" then
        -- before the start this (re)enters the draw: a joiner Redis lost is back in it by their next poll
        local kind, n = place_of(t, s, room, t0, t_now, nil, fresh and "d" or "dt")
        if kind == nil then
            return nil, 503, "unavailable", "the waiting room is unavailable: " .. tostring(n)
        end
        if kind == "p" then
            t = { kind = "p", place = n, armed_at = t.armed_at, item = t.item, user = t.user }
            fresh = true
        else
            drawn = n
        end
    end
    if t.kind == "p" and not fresh and lost(t, t_now) then
        -- registered again (a failure leaves it to the next poll: the ticket alone answers this one); a user who
        -- joined again meanwhile and holds another place is answered the lower of the two, in a new ticket
        local kind, place = place_of(t, s, room, t0, t_now, tostring(t.place))
        if kind == "p" and place ~= t.place then
            t = { kind = "p", place = place, armed_at = t.armed_at, item = t.item, user = t.user }
            fresh = true
        end
    end
    local body
    if t.kind == "d" then
        -- in the draw: the place is drawn at the start; until then the worst case is behind everyone in it
        local n = drawn
        local until_start = t0 - t_now
        local wait_ms = until_start + (n * 1000 + room.admit_per_s - 1) // room.admit_per_s
        body = { ok = true, state = "waiting", position = n, estimated_wait_s = (wait_ms + 999) // 1000,
                 -- come back at the start, spread over up to 2 s so the draw is not one burst of polls
                 retry_after_ms = math.max(10, math.min(until_start, 30000)) + score(t.item, t.armed_at, t.user) % 2000,
                 starts_at = t0 }
    else
        local e, status, code, message = placed(t, s, room, t0, t_now)
        if e == nil then
            return nil, status, code, message
        end
        body = e
    end
    if fresh then
        body.ticket = ticket_of(t)
    end
    return body
end

-- the item's settings for the room, or nil and the error
local function settings_of(item)
    local s, err = items.get(item)
    if s == nil then
        return nil, 503, "unavailable", "redis is unavailable: " .. tostring(err)
    elseif s == false then
        if common.known_item(item) then -- its keys vanished from Redis: being rebuilt (books/loss.lua)
            common.ask_rebuild(item)
            return nil, 503, "unavailable", "the item is being rebuilt after redis lost data; retry shortly"
        end
        return nil, 404, "unknown_item", "no such item"
    end
    return s
end

function M.join(item, user)
    local s, status, code, message = settings_of(item)
    if s == nil then
        return nil, status, code, message
    end
    if s.waiting_room == nil then
        return nil, 409, "no_waiting_room", "this item has no waiting room: buy it directly"
    end
    if not tokens.configured() then -- set up on a server with a secret, served by one without: no ticket can be signed
        return nil, 503, "unavailable", "purchase tokens are not configured on this server (token_secret)"
    end
    local t_now = math.floor(now())
    if s.ends_at and t_now >= s.ends_at then
        return nil, 403, "ended", "the sale has ended"
    end
    local body
    body, status, code, message = answer({ kind = "d", place = 0, armed_at = s.armed_at, item = item, user = user },
        s, t_now, true)
    if body == nil then
        return nil, status, code, message
    elseif body.state == "sold_out" then
        return nil, 409, "sold_out", "the item is sold out"
    end
    joins()
    return body
end

function M.status(ticket, item, user)
    local t = parse(ticket)
    if t == nil or (item ~= nil and item ~= t.item) or (user ~= nil and user ~= t.user) then
        return nil, 403, "bad_ticket", "this is not a ticket of this waiting room"
    end
    local s, status, code, message = settings_of(t.item)
    if s == nil then
        return nil, status, code, message
    end
    if s.waiting_room == nil or s.armed_at ~= t.armed_at then
        return nil, 403, "bad_ticket", "this ticket is of an earlier set-up of the item"
    end
    local body
    body, status, code, message = answer(t, s, math.floor(now()), false)
    if body then
        polls[body.state]()
    end
    return body, status, code, message
end

-- ===== the task (app.every "queue.draws"): each started room's draw sealed and copied to MySQL =====
-- A draw lives in Redis until the start; from then on it is fixed, and the task seals it (if no join or poll has) and
-- copies each member's place to MySQL (queue_draws), COPY_ROWS a statement, so that a Redis loss after the start moves
-- no pre-start joiner back (queue_join.lua answers "m": place_of looks them up there). Idempotent: INSERT IGNORE, and
-- a copy interrupted goes on from the queue's "copied" count. A room whose draw is copied, ended or gone leaves the
-- set of rooms the task looks at.
local COPY_ROWS = 1000

-- the room leaves the task's set, if the settings the task acted on are still the item's (not a second's cache of an
-- earlier set-up: the new room would never be copied)
local function forget(item, s)
    if common.int_or_nil(redis.call("HGET", K.meta(item), "armed_at")) == s.armed_at then
        redis.call("SREM", K.queue_items, item)
    end
end

local function copy_draw(item, s, t_now)
    local k = keys(item, s.armed_at)
    local q = redis.call("HMGET", k[1], "sealed", "copied")
    if type(q) ~= "table" then
        return
    end
    if not q[1] then
        local kind = place_of({ user = "", item = item, armed_at = s.armed_at }, s, s.waiting_room, start_of(s), t_now,
            nil, "seal")
        if kind == nil then
            return
        end
        q = redis.call("HMGET", k[1], "sealed", "copied")
        if type(q) ~= "table" or not q[1] then
            return
        end
    end
    local sealed, copied = common.int_or_nil(q[1]), common.int_or_nil(q[2]) or 0
    while copied < sealed do
        local users = redis.call("ZRANGE", k[2], copied, copied + COPY_ROWS - 1)
        if type(users) ~= "table" or #users == 0 then
            return -- the draw is gone (Redis lost it): nothing more to copy
        end
        local values, args = {}, {}
        for i, user in ipairs(users) do
            values[i] = "(?, ?, ?, ?)"
            local n = #args
            args[n + 1], args[n + 2], args[n + 3], args[n + 4] = item, s.armed_at, user, copied + i - 1
        end
        local res, err = mysql.query("INSERT IGNORE INTO queue_draws (item_id, armed_at, user_id, place) VALUES "
            .. table.concat(values, ", "), table.unpack(args))
        if res == nil then
            log.warn("waiting room of " .. item .. ": the draw's copy to mysql waits: " .. tostring(err))
            return
        end
        copied = copied + #users
        redis.call("HSET", k[1], "copied", copied)
    end
    forget(item, s) -- nothing more to do for it (a rebuild lists it again: books/mark.lua)
end

function M.keep_draws()
    local listed = redis.call("SMEMBERS", K.queue_items)
    if type(listed) ~= "table" then
        return
    end
    local t_now = math.floor(now())
    for _, item in ipairs(listed) do
        local s = items.get(item)
        if s and (not s.waiting_room or (s.ends_at and t_now >= s.ends_at)) then
            forget(item, s) -- no room (any more) to keep
        elseif s and t_now >= start_of(s) then
            copy_draw(item, s, t_now)
        end
    end
end

function M.counts(item, room, starts_at, armed_at)
    local k = keys(item, armed_at or 0)
    local r, err = redis.pipeline(function(p)
        p:call("HMGET", k[1], "sealed", "next")
        p:call("ZCARD", k[2])
        p:call("HLEN", k[3])
    end)
    if r == nil then
        return nil, err
    end
    local q = r[1][1]
    local drawn, next_place = math.tointeger(r[2][1]) or 0, type(q) == "table" and common.int_or_nil(q[2])
    if not next_place then -- the draw is open (or nobody came): everyone in it waits
        return { waiting = drawn, admitted = 0, admit_per_s = room.admit_per_s }
    end
    -- everyone holds a place below next; the places above the last admitted one are all held (a place is skipped
    -- only when the queue was empty: it was admitted already), so they are who waits
    local holders = (common.int_or_nil(q[1]) or 0) + (math.tointeger(r[3][1]) or 0)
    local top = admitted_place(room, starts_at or armed_at, math.floor(now()))
    local waiting = math.min(holders, math.max(0, next_place - 1 - top))
    return { waiting = waiting, admitted = holders - waiting, admit_per_s = room.admit_per_s }
end

return M
