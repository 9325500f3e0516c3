-- redis/queue_join.lua: a user's place in an item's waiting room (admission/queue.lua): one per user, drawn at the
-- start for those who came before it, in order of arrival after it.
-- KEYS: the queue (a hash: sealed = how many were in the draw, next = the next free place), the draw (a sorted set,
-- user → score), the late joiners (a hash, user → place); one slot (the item's tag).
-- ARGV: user, the user's draw score, the highest place admitted now (-1 before the start: the draw is open), when
-- the keys may go (ms since the epoch), the lowest place a late joiner may take (the floor kept in MySQL: no place
-- handed out before a Redis loss is handed out again).
-- Returns { "d", how many are in the draw } while the draw is open, else { "p", the user's place } (0-based).
local user, admitted, floor = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[5])
local sealed = redis.call("HGET", KEYS[1], "sealed")
if not sealed then
    if admitted < 0 then -- before the start: into the draw (again: the same score, the same member)
        if redis.call("ZADD", KEYS[2], "NX", ARGV[2], user) == 1 then
            redis.call("PEXPIREAT", KEYS[2], ARGV[4])
        end
        return { "d", redis.call("ZCARD", KEYS[2]) }
    end
    -- the first call after the start seals the draw: its members hold places 0 .. n-1, in the order of their scores
    local n = redis.call("ZCARD", KEYS[2])
    redis.call("HSET", KEYS[1], "sealed", n, "next", math.max(n, floor))
    redis.call("PEXPIREAT", KEYS[1], ARGV[4])
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
place = math.max(tonumber(redis.call("HGET", KEYS[1], "next")), admitted + 1, floor)
redis.call("HSET", KEYS[1], "next", place + 1)
redis.call("HSET", KEYS[3], user, place)
redis.call("PEXPIREAT", KEYS[3], ARGV[4])
return { "p", place }
