-- books/cluster.lua: losses on a Redis Cluster, told master by master (books/loss.lua's watch on a cluster).
local common = require "common"
local books = require "books"
local B = require "common.buckets"
local lock = require "books.lock"
local mark = require "books.mark"
local rebuilder = require "books.rebuild"
local vanished = require "books.vanished"
local K = common.keys

local M = {}

local under_lock, mark_all, rebuild, vanished_round = lock.under, mark.all, rebuilder.run, vanished.round

-- ===== a Redis Cluster: an epoch per master =====
-- Every master has its own run_id, asked with redis.call_at. Master M stands for itself by the token of the first
-- slot it serves (redis.masters(): T); its epoch is `seckill:epoch:{T}` (on M) holding M's run_id, and
-- `seckill:epochs` records run_id -> T for every master (on whichever master its slot is). Each round, per master
-- (run_id R, epoch value V):
--   V == R                                    all well
--   V the run_id of another master serving now  slot T came to M by a reshard (keys move with their slot): not a
--                                             loss; M's epoch is put at T
--   V another run_id, of no master now        M restarted, or failed over to a replica (which may have missed the
--                                             last writes): a loss; every item with a key on M is marked
--   V missing                                 M's epoch was at T' (`seckill:epochs`): T' == T, or T' still on M and
--                                             its epoch gone or not R: M lost its data (flushed, restarted empty; a
--                                             run_id nobody recorded is a restart too): a loss, only the items
--                                             without meta are marked (as after a flush of a single Redis), and
--                                             bucketed items with a bucket on M whose meta is gone in full. T'
--                                             moved to another master: a reshard moved M's first slot away, not a
--                                             loss.
-- So a slot changing owner is never a loss by itself (the epoch follows a master's run_id, not a slot). Not seen:
-- a loss of M in the same round as a reshard that takes M's first slot away; a master added empty (a run_id never
-- recorded, with no epoch moved to it yet) is taken for a restart: its items (none yet) are rebuilt, harmless.
local function master_run_id(token)
    local info, err = redis.call_at(K.epoch_at(token), "INFO", "server")
    if type(info) ~= "string" then
        return nil, err
    end
    return info:match("run_id:(%x+)")
end

-- the masters now: { tokens = {T...}, run = {T = R}, losses = {T = {only_missing =, why =}}, stamp = {T...} }, or
-- nil and why (a master unreachable: nothing to compare this round)
local function survey()
    local tokens = redis.masters()
    if #tokens == 0 then
        return nil, "no slot map"
    end
    local run, live = {}, {}
    for _, t in ipairs(tokens) do
        local r, err = master_run_id(t)
        if r == nil then
            return nil, err
        end
        run[t], live[r] = r, t
    end
    local reg, rerr = redis.call("HGETALL", K.epochs)
    if type(reg) ~= "table" then
        return nil, rerr
    end
    local known = {}
    for i = 1, #reg - 1, 2 do
        known[reg[i]] = reg[i + 1]
    end
    local out = { tokens = tokens, run = run, losses = {}, stamp = {}, n = 0 }
    local function lost(t, only_missing, why)
        out.losses[t] = { only_missing = only_missing, why = why }
        out.n = out.n + 1
    end
    for _, t in ipairs(tokens) do
        local r = run[t]
        local v, err = redis.call("GET", K.epoch_at(t))
        if v == nil and err ~= nil then
            return nil, err
        end
        if v == r then
            if known[r] ~= t then
                table.insert(out.stamp, t)
            end
        elseif v then
            if live[v] then
                table.insert(out.stamp, t) -- its first slot came from another master, with that one's epoch
            else
                lost(t, false, "restarted or failed over (run_id " .. v .. " → " .. r .. ")")
            end
        else
            local was = known[r]
            if was == nil then
                lost(t, true, "lost its data (run_id " .. r .. " without an epoch)")
            elseif was == t then
                lost(t, true, "lost its data (epoch gone)")
            elseif redis.master_of(K.epoch_at(was)) == t then
                local old, gerr = redis.call("GET", K.epoch_at(was))
                if old == nil and gerr ~= nil then
                    return nil, gerr
                end
                if old == r then
                    table.insert(out.stamp, t) -- a slot before its first came to it: the epoch moves there
                else
                    lost(t, true, "lost its data (epoch gone)")
                end
            else
                table.insert(out.stamp, t) -- its first slot went to another master (a reshard)
            end
        end
    end
    return out
end

-- the choice of mark_all for an item row, given the masters that lost data
local function pick_lost(losses)
    return function(r)
        local item = r.item_id
        local k = common.buckets_in(r.admission ~= mysql.null and r.admission or nil)
        local mode -- nil: untouched; true: only if missing; false: in any case
        for b = 0, k - 1 do
            local key = K.meta(B.tag(item, b))
            local l = losses[redis.master_of(key) or ""]
            if l ~= nil then
                local m = l.only_missing
                if m and b > 0 and redis.call("EXISTS", key) == 0 then
                    m = false -- a bucket of it lost: the whole item is rebuilt
                end
                if mode == nil then
                    mode = m
                else
                    mode = mode and m
                end
            end
        end
        return mode
    end
end

-- one round on a cluster (the lock held)
local function cluster_round(token)
    local s, err = survey()
    if s == nil then
        return books.warn_every("survey", 5000, "redis cluster: masters not compared this round: " .. tostring(err))
    end
    if s.n > 0 then
        local marked, merr = mark_all(nil, pick_lost(s.losses))
        local whys = {}
        for _, t in ipairs(s.tokens) do
            if s.losses[t] then
                whys[#whys + 1] = "master {" .. t .. "} " .. s.losses[t].why
            end
        end
        local what = table.concat(whys, "; ")
        if marked == nil then
            return books.warn_every("mark", 5000, "redis " .. what .. "; cannot pause its items yet: " .. merr)
        end
        log.warn("redis cluster: " .. what .. ": " .. marked .. " item(s) paused (503) until rebuilt from MySQL")
        metrics.add("seckilld_redis_data_losses_total", 1)
    end
    if s.n > 0 or #s.stamp > 0 then
        -- after the marking: a round interrupted before is done again
        for _, t in ipairs(s.tokens) do
            local ok, serr = redis.call("SET", K.epoch_at(t), s.run[t])
            if ok == nil or ok == false then
                return books.warn_every("stamp", 5000, "redis cluster: epoch not set: " .. tostring(serr))
            end
        end
        local args = {}
        for _, t in ipairs(s.tokens) do
            args[#args + 1], args[#args + 2] = s.run[t], t
        end
        redis.pipeline(function(p)
            p:call("DEL", K.epochs)
            p:call("HSET", K.epochs, table.unpack(args))
        end)
        -- the take tells "unknown item" (epoch present) from "lost" (gone) by this one
        redis.call("SET", K.epoch, "cluster")
    end
    rebuild(token)
end

local function cluster_watch()
    local failovers = redis.failover_generation() -- before the survey: a failover seen after it waits for the next
    local s = survey()
    if s == nil then
        return -- a master is down, or no map yet: nothing to compare yet
    end
    if s.n == 0 and #s.stamp == 0 then
        -- every master's epoch holds its run_id: a loss a failover caused is marked in Redis already (the marking
        -- comes before the epoch), so the slots paused since (sale/no_meta.lua) may take again
        redis.failover_settle(failovers)
    end
    local pending = redis.call("SCARD", K.rebuilding)
    if pending == nil then
        return
    end
    if s.n == 0 and #s.stamp == 0 then
        local ok, verr = pcall(vanished_round) -- may mark: the rebuild is the next round's
        if not ok then
            books.warn_every("vanished", 5000, "redis: items not compared with MySQL this round: " .. tostring(verr))
        end
        if pending == 0 or pending == false then
            return
        end
    end
    under_lock(cluster_round) -- surveyed again under the lock: another process may have been first
end
M.watch = cluster_watch

return M
