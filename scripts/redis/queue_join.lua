-- redis/queue_join.lua: a user's place in an item's waiting room (admission/queue.lua): one per user, drawn at the
-- start for those who came before it, in order of arrival after it.
-- KEYS: the queue (a hash: sealed = how many were in the draw, next = the next free place, ceiling = the places
-- reserved in MySQL), the draw (a sorted set, user → score), the late joiners (a hash, user → place); one slot (the
-- item's tag).
-- ARGV: user, the user's draw score, the highest place admitted now (-1 before the start: the draw is open), when
-- the keys may go (ms since the epoch), the ceiling MySQL holds as just read ("" when the caller did not read it), a
-- ceiling the caller has just written to MySQL ("" for none), the place the user's ticket carries ("" for none: a
-- ticket's holder registered again after Redis lost the queue, so that joining again finds that place), now (ms).
-- Returns { "d", how many are in the draw } while the draw is open, { "p", the user's place } (0-based) once placed,
-- { "f" } when the queue must be set up again and the caller must read MySQL's ceiling first (the first call after
-- the start, or after Redis lost the queue), { "c", place } when the next place is not reserved in MySQL yet: the
-- caller raises MySQL's ceiling above it and calls again. So no place handed out before a Redis loss is handed out
-- again: after it the queue starts from MySQL's ceiling.
local user, admitted = ARGV[1], tonumber(ARGV[3])
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
    -- the first call after the start seals the draw: its members hold places 0 .. n-1, in the order of their scores;
    -- later joiners come after them and after every place MySQL reserved (a queue Redis lost)
    local n, floor = redis.call("ZCARD", KEYS[2]), tonumber(ARGV[5])
    redis.call("HSET", KEYS[1], "sealed", n, "next", math.max(n, floor), "ceiling", floor)
    if floor > 0 or ARGV[7] ~= "" then -- places were handed out before: Redis lost the queue (restored_at: queue.lua)
        redis.call("HSET", KEYS[1], "restored_at", ARGV[8])
    end
    redis.call("PEXPIREAT", KEYS[1], ARGV[4])
end
if ARGV[7] ~= "" then
    if not redis.call("ZSCORE", KEYS[2], user) then
        redis.call("HSETNX", KEYS[3], user, ARGV[7])
        redis.call("PEXPIREAT", KEYS[3], ARGV[4])
    end
    return { "p", tonumber(ARGV[7]) }
end
if ARGV[6] ~= "" and tonumber(ARGV[6]) > tonumber(redis.call("HGET", KEYS[1], "ceiling")) then
    redis.call("HSET", KEYS[1], "ceiling", ARGV[6])
end
local rank = redis.call("ZRANK", KEYS[2], user)
if rank then
    return { "p", rank }
end
local place = redis.call("HGET", KEYS[3], user)
if place then
    return { "p", tonumber(place) }
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
