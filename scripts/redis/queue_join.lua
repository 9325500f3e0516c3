-- redis/queue_join.lua: a user's place in an item's waiting room (admission/queue.lua): one per user, drawn at the
-- start for those who came before it, in order of arrival after it.
-- KEYS: the queue (a hash: sealed = how many were in the draw, next = the next free place, ceiling = the places
-- reserved in MySQL, restored_at = when it was set up again after Redis lost it, copied = how much of the draw the
-- task copied to MySQL), the draw (a sorted set, user → score), the late joiners (a hash, user → place); one slot
-- (the item's tag).
-- ARGV: 1 user, 2 the user's draw score, 3 the highest place admitted now (-1 before the start: the draw is open),
-- 4 when the keys may go (ms since the epoch), 5 the ceiling MySQL holds as just read ("" when the caller did not read
-- it), 6 a ceiling the caller has just written to MySQL ("" for none), 7 the place the user's ticket carries ("" for
-- none: a ticket's holder registered again after Redis lost the queue, so that joining again finds that place),
-- 8 now (ms), 9 what the caller is: "" a registration, "d" a join, "dt" the holder of a ticket from before the draw,
-- "m" either once MySQL's copy of the draw did not have them, "seal" the task sealing the draw.
-- Returns { "d", how many are in the draw } while the draw is open, { "p", the user's place } (0-based) once placed,
-- { "f" } when the queue must be set up again and the caller must read MySQL's ceiling first (the first call after
-- the start, or after Redis lost the queue), { "c", place } when that place is not reserved in MySQL yet: the caller
-- raises MySQL's ceiling above it and calls again, { "m" } when a pre-draw ticket's holder is not in a draw that
-- Redis lost: the caller looks for them in MySQL's copy of it. So no place handed out before a Redis loss is handed
-- out again: after it the queue starts above MySQL's ceiling.
local user, admitted, mode = ARGV[1], tonumber(ARGV[3]), ARGV[9]
local sealed = redis.call("HGET", KEYS[1], "sealed")
if not sealed then
    if admitted < 0 then -- before the start: into the draw (again: the same score, the same member)
        if redis.call("ZADD", KEYS[2], "NX", ARGV[2], user) == 1 then
            redis.call("PEXPIREAT", KEYS[2], ARGV[4])
        end
        return { "d", redis.call("ZCARD", KEYS[2]) }
    end
    if ARGV[5] == "" then
        return { "f" }
    end
    -- the first call after the start seals the draw: its members hold places 0 .. n-1, in the order of their scores,
    -- reserved in MySQL first; later joiners come after them and after every place MySQL reserved before (a queue
    -- Redis lost). The floor is the first one a caller read for this seal, kept here: a second sealer may read the
    -- reservation the first one just made for the draw, which is no place handed out
    if redis.call("HSETNX", KEYS[1], "floor", ARGV[5]) == 1 then
        redis.call("PEXPIREAT", KEYS[1], ARGV[4])
    end
    local n, floor = redis.call("ZCARD", KEYS[2]), tonumber(redis.call("HGET", KEYS[1], "floor"))
    local reserved = math.max(tonumber(ARGV[5]), tonumber(ARGV[6]) or 0)
    if reserved < n then
        return { "c", n }
    end
    redis.call("HSET", KEYS[1], "sealed", n, "next", math.max(n, floor), "ceiling", reserved, "copied", 0)
    if floor > 0 then -- places were handed out before: Redis lost the queue (restored_at: queue.lua)
        redis.call("HSET", KEYS[1], "restored_at", ARGV[8])
    end
    redis.call("PEXPIREAT", KEYS[1], ARGV[4])
end
if mode == "seal" then
    return { "p", -1 }
end
if ARGV[6] ~= "" and tonumber(ARGV[6]) > tonumber(redis.call("HGET", KEYS[1], "ceiling")) then
    redis.call("HSET", KEYS[1], "ceiling", ARGV[6])
end
if ARGV[7] ~= "" then
    -- a ticket's place registered again; a user who meanwhile joined again and was given another keeps the lower
    -- one (queue.lua answers the ticket with it): one place per user
    local place = tonumber(ARGV[7])
    local rank = redis.call("ZRANK", KEYS[2], user)
    if rank then
        return { "p", rank }
    end
    local held = tonumber(redis.call("HGET", KEYS[3], user))
    if held == nil or held > place then
        redis.call("HSET", KEYS[3], user, place)
        redis.call("PEXPIREAT", KEYS[3], ARGV[4])
        held = place
    end
    return { "p", held }
end
local rank = redis.call("ZRANK", KEYS[2], user)
if rank then
    return { "p", rank }
end
local place = redis.call("HGET", KEYS[3], user)
if place then
    return { "p", tonumber(place) }
end
local restored = tonumber(redis.call("HGET", KEYS[1], "restored_at"))
if restored and ((mode == "d" and restored > tonumber(ARGV[8]) - 600000) or mode == "dt") then
    return { "m" } -- in a draw Redis lost (a join in the last 10 minutes, a pre-draw ticket ever): MySQL's copy says
end
-- a late joiner: the next free place, and never one already admitted (the queue was empty: in from the next one)
place = math.max(tonumber(redis.call("HGET", KEYS[1], "next")), admitted + 1)
if place >= tonumber(redis.call("HGET", KEYS[1], "ceiling")) then
    return { "c", place }
end
redis.call("HSET", KEYS[1], "next", place + 1)
redis.call("HSET", KEYS[3], user, place)
redis.call("PEXPIREAT", KEYS[3], ARGV[4])
return { "p", place }
