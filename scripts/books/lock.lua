-- books/lock.lua: the rebuild lock (books/loss.lua): one process at a time marks and rebuilds the items after a loss.
local common = require "common"
local K = common.keys
local S = common.settings

local M = {}

local function take_lock(token)
    local ok = redis.call("SET", K.rebuild_lock, token, "NX", "PX", S.lock_ms)
    return ok == "OK"
end

local RENEW = common.redis_script("lock_renew")

local function renew_lock(token)
    return redis.evalsha(RENEW, { K.rebuild_lock }, { token, S.lock_ms }) == 1
end

local LOCK_RELEASE = common.redis_script("lock_release")

local function release_lock(token)
    redis.evalsha(LOCK_RELEASE, { K.rebuild_lock }, { token })
end

-- runs round(token) holding the rebuild lock, and releases it whatever round does; returns at once when another
-- process holds it (that one is on it)
local function under_lock(round)
    local token = uuid()
    if not take_lock(token) then
        return
    end
    local ok, err = pcall(round, token)
    release_lock(token)
    if not ok then
        error(err, 0)
    end
end
M.renew, M.under = renew_lock, under_lock

return M
