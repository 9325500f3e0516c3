-- books/loss.lua: Redis losing its data is detected and repaired from MySQL, never turned into a new sale.
--
--   loss.watch()      the task (app.lua: every sale.watch_ms, on one worker of each process)
--   loss.repair(ids)  pauses those of `ids` whose keys vanished from Redis (books/vanished.lua; admin.lua, app.lua)
--
-- The watch ties the parts together, each a file under books/: the rebuild lock (lock.lua), pausing items for a
-- rebuild (mark.lua), rebuilding them from MySQL (rebuild.lua), items whose keys vanished with the epoch intact
-- (vanished.lua), the maxmemory-policy check (eviction.lua), and on a Redis Cluster the masters surveyed one by one
-- (cluster.lua).
local common = require "common"
local books = require "books"
local lock = require "books.lock"
local mark = require "books.mark"
local rebuilder = require "books.rebuild"
local vanished = require "books.vanished"
local eviction = require "books.eviction"
local cluster = require "books.cluster"
local K = common.keys

local M = {}

local under_lock, mark_all, rebuild, vanished_round = lock.under, mark.all, rebuilder.run, vanished.round
local eviction_round, cluster_watch = eviction.round, cluster.watch
M.repair = vanished.repair

-- ===== losing Redis's data =====
-- The epoch key holds the run_id of the Redis server that our books were last known good on. Missing: the data
-- was lost (flush, restart without persistence). Another run_id: the server restarted and may have lost
-- acknowledged writes. Either way every item set up in MySQL is paused (meta `rebuilding`; buys answer 503) and
-- rebuilt: wait until no buy from before the loss can still be producing (the grace), pass a barrier (the
-- consumer has persisted everything on the topic), then recompute stock, sold and per-user counts from MySQL.

local function server_run_id()
    local info, err = redis.call("INFO", "server")
    if type(info) ~= "string" then
        return nil, err
    end
    return info:match("run_id:(%x+)")
end

-- the task: cheap when all is well (one INFO, one GET, one SCARD; on a cluster an INFO and a GET per master, one
-- HGETALL, one SCARD), besides a slice of the items MySQL knows (one pipeline per slot) and, every 10 s, the
-- eviction policy (an INFO per master)
function M.watch()
    local ok, eerr = pcall(eviction_round)
    if not ok then
        books.warn_every("eviction_check", 5000, "redis: maxmemory-policy not checked: " .. tostring(eerr))
    end
    if redis.cluster then
        return cluster_watch()
    end
    local run_id = server_run_id()
    if run_id == nil then
        return -- Redis is down: nothing to compare yet
    end
    -- two calls: the keys are in different slots on a cluster
    local epoch, err = redis.call("GET", K.epoch)
    if epoch == nil and err ~= nil then
        return
    end
    if epoch == run_id then
        local vok, verr = pcall(vanished_round) -- may mark: the rebuild below takes it
        if not vok then
            books.warn_every("vanished", 5000, "redis: items not compared with MySQL this round: " .. tostring(verr))
        end
    end
    local pending = redis.call("SCARD", K.rebuilding)
    if pending == nil then
        return
    end
    if epoch == run_id and (pending == 0 or pending == false) then
        return
    end
    under_lock(function(token)
        if epoch ~= run_id then
            local kind = epoch and "restarted (run_id " .. tostring(epoch) .. " → " .. run_id .. ")" or "lost its data"
            -- after a flush only items without meta are on no books; after a restart every item may be stale
            local marked, merr = mark_all(not epoch)
            if marked == nil then
                return books.warn_every("mark", 5000, "redis " .. kind .. "; cannot pause the items yet: " .. merr)
            end
            redis.call("SET", K.epoch, run_id)
            if marked > 0 then
                log.warn("redis " .. kind .. ": " .. marked .. " item(s) paused (503) until rebuilt from MySQL")
                metrics.add("seckilld_redis_data_losses_total", 1)
            end
        end
        rebuild(token)
    end)
end

return M
