-- tests/fuzz/queue.lua: the waiting room under a fuzzer (tests/fuzz/queue.c), with the real scripts: waiting.lua's
-- routes and admission/queue.lua's tickets, places and answers. The VM has no Redis or MySQL and this is no request's
-- coroutine, so the first backend call raises ("redis is not available on this thread", "mysql: no connection pool
-- on this thread", or "cannot yield here" for one that would wait): that is how a handler shows it went that far.
--
-- What is asserted, for each input (the status request's query string and the join's body):
--   1. the join: 400 bad_request with a message exactly when the body is not a JSON object with a valid item_id and
--      user_id (1-64 of A-Za-z0-9_.:-), else Redis;
--   2. the status as it came: 400 without a ticket; a ticket the fuzzer made is a 403 bad_ticket before any backend
--      unless it is exactly one the server signs ("q1~<d|p>~<place>~<armed_at>~<item>~<user>~<mac>", place and
--      armed_at 1-15 digits, ids valid, the mac the server's over "q1|kind|place|armed_at|item|user" with the numbers
--      as integers), and the item_id/user_id parameters, when given, are its own: then Redis;
--   3. the ticket's fields signed by the harness (tokens.mac, the server's secret: harness.c): accepted exactly when
--      they are a ticket's, and refused for another item_id or user_id parameter;
--   4. against a stand-in for Redis and MySQL (the query string's fz_* parameters, which the handlers ignore, choose
--      its answers: fz_rate, fz_ttl, fz_buckets, fz_start, fz_end and fz_restored (ms from now), fz_left, fz_bought,
--      fz_place, fz_join (p, f, c or loop: what redis/queue_join.lua answers after the start), fz_armed, fz_meta=0
--      for an unknown item), the signed ticket's poll and the body's join give one of the contract's answers
--      (API-v1.2.md "Waiting room"): a state with well-formed numbers that JSON can carry, the same pass on every
--      poll, a token the buy accepts, and every ticket the server hands out accepted by the poll. The stand-in is
--      swapped in for that call only, and what the process remembers of the item is forgotten around it.
local waiting = require "waiting"
local queue = require "admission.queue"
local tokens = require "admission.tokens"
local items = require "common.items"
local buckets = require "common.buckets"
local common = require "common"

local K = common.keys

assert(tokens.configured(), "harness.c sets SECKILLD_TOKEN_SECRET")

local function expect_no_backend(ok, err, ...)
    if not ok then
        local e = tostring(err)
        assert(e:find("redis is not available on this thread", 1, true) or e:find("cannot yield here", 1, true)
            or e:find("no connection pool on this thread", 1, true), e)
    end
    return ok, err, ...
end

local function assert_fail(ok, status, answer, want_status, want_code, what)
    assert(ok and status == want_status and type(answer) == "table" and answer.ok == false
        and answer.error == want_code and type(answer.message) == "string" and answer.message ~= "",
        what .. ": status " .. tostring(status) .. " " .. tostring(type(answer) == "table" and answer.error or answer))
end

-- a copy of the status request with another query (what core/request.c would have built for it)
local function with_query(req, query)
    local r = setmetatable({}, getmetatable(req))
    for k, v in pairs(req) do
        r[k] = v
    end
    r.query = query
    return r
end

-- ===== the promises' own reading of a ticket, apart from admission/queue.lua's =====

local function digits(s)
    return type(s) == "string" and #s >= 1 and #s <= 15 and s:find("^%d+$") ~= nil
end

-- the ticket's seven "~"-separated parts, or nil
local function parts_of(ticket)
    if type(ticket) ~= "string" then
        return nil
    end
    local parts = {}
    for part in (ticket .. "~"):gmatch("([^~]*)~") do
        parts[#parts + 1] = part
        if #parts > 7 then
            return nil
        end
    end
    return #parts == 7 and parts or nil
end

local function in_domain(p)
    return p[1] == "q1" and (p[2] == "d" or p[2] == "p") and digits(p[3]) and digits(p[4]) and common.valid_id(p[5])
        and common.valid_id(p[6])
end

-- what the server signs for these fields: the numbers as integers (so "007" and "7" are one place)
local function signed_text(p)
    local function n(s)
        return digits(s) and tostring(math.tointeger(tonumber(s))) or s
    end
    return "q1|" .. p[2] .. "|" .. n(p[3]) .. "|" .. n(p[4]) .. "|" .. p[5] .. "|" .. p[6]
end

local function resign(p)
    return table.concat({ p[1], p[2], p[3], p[4], p[5], p[6], tokens.mac(signed_text(p)) }, "~")
end

-- whether the poll must take this ticket (with these item_id/user_id parameters) further than a 403
local function acceptable(ticket, item, user)
    local p = parts_of(ticket)
    return p ~= nil and in_domain(p) and p[7] == tokens.mac(signed_text(p)) and (item == nil or item == p[5])
        and (user == nil or user == p[6])
end

-- ===== a stand-in for Redis and MySQL =====

local function knob(q, name, lo, hi, default)
    local v = math.tointeger(tonumber(q[name] or ""))
    if v == nil then
        return default
    end
    return math.max(lo, math.min(hi, v))
end

-- the world the stand-in answers from: the item's settings, its stock, the buyer's count, the queue's state
local function world_of(q, item, armed_at, t_now)
    local w = {
        item = item,
        meta = q.fz_meta ~= "0",
        armed_at = armed_at,
        rate = knob(q, "fz_rate", 1, 100000, 100),
        ttl = knob(q, "fz_ttl", 10, 3600, 300),
        buckets = knob(q, "fz_buckets", 1, 4, 1),
        left = knob(q, "fz_left", -5, 1000000, 10),
        bought = knob(q, "fz_bought", 0, 1000, 0),
        place = knob(q, "fz_place", 0, 1000000000000, 0),
        join = q.fz_join or "p",
        calls = 0,
    }
    local start = knob(q, "fz_start", -31536000000, 31536000000, nil)
    w.starts_at = start and t_now + start or nil
    local ends = knob(q, "fz_end", -31536000000, 31536000000, nil)
    w.ends_at = ends and t_now + ends or nil
    local restored = knob(q, "fz_restored", -31536000000, 0, nil)
    w.restored_at = restored and t_now + restored or nil
    local armed = knob(q, "fz_armed", 0, 999999999999999, nil)
    if armed then
        w.armed_at = armed
    end
    return w
end

local function stand_in(w)
    local meta_key, queue_key = K.meta(w.item), "seckill:{" .. w.item .. "}:queue:" .. w.armed_at
    local call = function(cmd, key, ...)
        w.calls = w.calls + 1
        if cmd == "HMGET" and key == meta_key then
            if not w.meta then
                return { false, false, false, false, false }
            end
            local admission = json.encode { waiting_room = { admit_per_s = w.rate, pass_ttl_s = w.ttl },
                                            buckets = w.buckets > 1 and w.buckets or nil }
            return { "1", w.starts_at and tostring(w.starts_at) or false, w.ends_at and tostring(w.ends_at) or false,
                     admission, tostring(w.armed_at) }
        elseif cmd == "GET" then
            for b = 0, w.buckets - 1 do
                if key == K.stock(buckets.tag(w.item, b)) then
                    return tostring(b == 0 and w.left or 0)
                end
            end
        elseif cmd == "HMGET" and key == queue_key then
            return { "1", w.restored_at and tostring(w.restored_at) or false }
        elseif cmd == "HGET" then
            for b = 0, w.buckets - 1 do
                if key == K.users(buckets.tag(w.item, b)) then
                    return w.bought > 0 and tostring(w.bought) or false
                end
            end
        end
        return nil, "stand-in: no answer for " .. tostring(cmd) .. " " .. tostring(key)
    end
    local joins = 0
    local evalsha = function(script, keys, args)
        w.calls = w.calls + 1
        assert(type(keys) == "table" and keys[1] == queue_key and #keys == 3, "the join script's keys")
        assert(type(args) == "table" and #args == 8, "the join script's arguments")
        joins = joins + 1
        if tonumber(args[3]) < 0 then -- before the start: the draw is open (the caller is in it)
            return { "d", 1 + w.place % 100000 }
        elseif args[7] ~= "" then -- a ticket's holder registered again: the ticket's place
            return { "p", tonumber(args[7]) }
        elseif w.join == "f" and args[5] == "" then
            return { "f" }
        elseif w.join == "c" and args[6] == "" then
            return { "c", w.place }
        elseif w.join == "loop" then -- MySQL's reservation never catches up
            return { "c", w.place + joins }
        end
        return { "p", math.max(w.place, tonumber(args[3]) + 1) }
    end
    local query = function(sql, ...)
        w.calls = w.calls + 1
        if sql:find("^SELECT queue_ceiling") then
            return { { queue_ceiling = w.place } }
        elseif sql:find("^UPDATE items SET queue_ceiling") then
            return { affected_rows = 1 }
        end
        return nil, "stand-in: no answer for " .. sql
    end
    return call, evalsha, query
end

-- what this process remembers of an item between requests (common/items.lua's cache and unknown mark, the room's
-- reads in the shared store): forgotten before a world is set up and after it, so that neither another world nor a
-- later input without the stand-in (libFuzzer runs an input again to look for leaks) reads it
local function forget(w)
    items.changed(w.item)
    for _, k in ipairs { common.soldout_key(w.item), "queue:left:" .. w.item, "admission:unknown:" .. w.item,
                         "queue:restored:" .. w.item .. ":" .. w.armed_at } do
        shared.delete(k)
    end
end

-- runs fn(...) with the stand-in in place of redis.call, redis.evalsha and mysql.query: pcall's results
local function against(w, fn, ...)
    local call, evalsha, query = stand_in(w)
    local saved = { redis.call, redis.evalsha, mysql.query }
    forget(w)
    redis.call, redis.evalsha, mysql.query = call, evalsha, query
    local r = table.pack(pcall(fn, ...))
    redis.call, redis.evalsha, mysql.query = saved[1], saved[2], saved[3]
    forget(w)
    return table.unpack(r, 1, r.n)
end

local STATES = { waiting = true, admitted = true, sold_out = true, expired = true }
local REFUSALS = { ["403 bad_ticket"] = true, ["404 unknown_item"] = true, ["503 unavailable"] = true,
                   ["403 ended"] = true }

local function int(v, lo)
    return math.type(v) == "integer" and v >= lo
end

-- a poll's or a join's answer in the stand-in's world: one of the contract's; returns the body when 200
local function check_answer(w, what, ok, body, status, code, message)
    assert(ok, what .. " raised: " .. tostring(body))
    if body == nil then
        assert(REFUSALS[tostring(status) .. " " .. tostring(code)] and type(message) == "string" and message ~= "",
            what .. ": " .. tostring(status) .. " " .. tostring(code))
        return nil
    end
    assert(type(body) == "table" and body.ok == true and STATES[body.state], what .. ": state " .. tostring(body.state))
    local encoded, err = pcall(json.encode, body)
    assert(encoded, what .. ": the answer cannot be sent as JSON: " .. tostring(err))
    if body.state == "waiting" then
        assert(int(body.position, 1) and int(body.estimated_wait_s, 0) and int(body.retry_after_ms, 10)
            and body.retry_after_ms <= 32000,
            what .. ": waiting " .. tostring(body.position) .. " " .. tostring(body.estimated_wait_s) .. " "
            .. tostring(body.retry_after_ms))
    elseif body.state == "admitted" then
        assert(type(body.token) == "string" and int(body.admitted_at, 0) and int(body.expires_at, 0)
            and body.expires_at == body.admitted_at + w.ttl * 1000, what .. ": admitted " .. tostring(body.token))
    elseif body.state == "sold_out" then
        assert(w.left <= 0, what .. ": sold out with " .. w.left .. " left")
    else
        assert(w.bought == 0, what .. ": expired though the user bought")
    end
    if body.ticket ~= nil then
        assert(type(body.ticket) == "string", what .. ": a ticket that is no string")
    end
    return body
end

-- the poll of `ticket` in world w, checked; and its ticket, when it hands out a new one, polled too
local function poll(w, ticket, item, user, depth)
    local what = "the poll of " .. ticket
    local body = check_answer(w, what, against(w, queue.status, ticket, item, user))
    if body == nil then
        return
    end
    if body.state == "admitted" then
        -- the pass is a function of the place: the same token on every poll, one the buy takes while it lasts
        local again = check_answer(w, what .. " (again)", against(w, queue.status, ticket, item, user))
        if again ~= nil and again.state == "admitted" then
            assert(again.token == body.token and again.expires_at == body.expires_at, what .. ": another pass")
        else -- the clock moved on between the two polls: the pass lapsed (expired), or the sale ended (403)
            local t = now()
            assert(t >= body.expires_at or (w.ends_at ~= nil and t >= w.ends_at),
                what .. ": the pass became " .. tostring(again and again.state) .. " before its end")
        end
        if body.expires_at > now() + 1000 then
            local p = parts_of(ticket)
            assert(tokens.verify(body.token, p[5], p[6]) == true, what .. ": the buy refuses the pass")
        end
    end
    if body.ticket ~= nil and depth < 2 then
        assert(acceptable(body.ticket), what .. ": the server handed out a ticket it refuses: " .. body.ticket)
        poll(w, body.ticket, nil, nil, depth + 1)
    end
end

return function(join, status)
    -- 1. the join: a refusal with a message, or Redis
    local body = join:json()
    local valid = type(body) == "table" and common.valid_id(body.item_id) and common.valid_id(body.user_id)
    local ok, st, answer = expect_no_backend(pcall(waiting.join, join))
    if valid then
        assert(not ok, "a valid join did not reach Redis: " .. tostring(st))
    else
        assert_fail(ok, st, answer, 400, "bad_request", "a join without a valid item_id and user_id")
    end

    -- 2. the status as it came
    local q = status.query
    local ticket = q.ticket
    ok, st, answer = expect_no_backend(pcall(waiting.status, status))
    if type(ticket) ~= "string" or ticket == "" then
        assert_fail(ok, st, answer, 400, "bad_request", "a status without a ticket")
    elseif acceptable(ticket, q.item_id, q.user_id) then
        assert(not ok, "a ticket the server signed did not reach Redis: " .. tostring(st))
    else
        assert_fail(ok, st, answer, 403, "bad_ticket", "a ticket the server did not sign")
    end

    -- 3. its fields signed by the harness
    local p = parts_of(ticket)
    local t_now = math.floor(now())
    if p ~= nil then
        local signed = resign(p)
        local query = { ticket = signed }
        ok, st, answer = expect_no_backend(pcall(waiting.status, with_query(status, query)))
        if in_domain(p) then
            assert(not ok, "a signed ticket did not reach Redis: " .. signed .. " " .. tostring(st))
            for _, other in ipairs { { ticket = signed, item_id = p[5] .. "x" }, { ticket = signed, user_id = "x" .. p[6] } } do
                ok, st, answer = expect_no_backend(pcall(waiting.status, with_query(status, other)))
                assert_fail(ok, st, answer, 403, "bad_ticket", "a signed ticket polled for another item or user")
            end
            -- 4. its poll in a world the query string chooses
            local w = world_of(q, p[5], math.tointeger(tonumber(p[4])), t_now)
            poll(w, signed, p[5], p[6], 0)
        else
            assert_fail(ok, st, answer, 403, "bad_ticket", "a signed ticket of fields no ticket has: " .. signed)
        end
    end

    -- 4. the body's join in that world: its ticket is one the poll takes
    if valid then
        local w = world_of(q, body.item_id, 1700000000000, t_now)
        local what = "the join of " .. body.item_id .. " " .. body.user_id
        local jok, jbody, jstatus, jcode, jmessage = against(w, queue.join, body.item_id, body.user_id)
        assert(jok, what .. " raised: " .. tostring(jbody))
        if jbody == nil then
            local refusal = tostring(jstatus) .. " " .. tostring(jcode)
            assert((REFUSALS[refusal] and refusal ~= "403 bad_ticket") or refusal == "409 sold_out"
                or refusal == "409 no_waiting_room", what .. ": " .. refusal .. " " .. tostring(jmessage))
        else
            check_answer(w, what, true, jbody)
            assert(jbody.state == "waiting" and type(jbody.ticket) == "string", what .. ": " .. tostring(jbody.state))
            assert(acceptable(jbody.ticket, body.item_id, body.user_id),
                what .. ": the server handed out a ticket it refuses: " .. jbody.ticket)
            poll(w, jbody.ticket, body.item_id, body.user_id, 0)
        end
    end
end
