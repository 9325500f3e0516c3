-- sale/no_meta.lua: what a take that found no meta answers, and the slots it does not take from while their master
-- has just failed over.
local common = require "common"
local items = require "common.items"
local K = common.keys

local M = {}

-- ===== an item without meta =====
-- The take found no meta: the item is unknown, or Redis lost its data (then the epoch is gone too: books/loss.lua),
-- or its keys vanished alone (the epoch intact, and the item on the process's list of items MySQL knows: 503 too;
-- a made-up id costs one shared-store lookup, never a MySQL query). The epoch is in a slot of its own on a cluster,
-- so it is asked apart, only on this rare path; nothing was taken either way, so the two reads need not be atomic
-- (a loss between them answers 404 instead of 503 once, for an item not on the list).
local function no_meta(tag, entries)
    local why
    for _, e in ipairs(entries) do
        if e.took and e.took.refusal == "no_meta" then
            local item = e.order.item_id
            if why == nil and tag ~= item then
                -- a bucket without meta: the item is being rebuilt (its buckets come back with it), or it was set up
                -- again with fewer buckets than this process still knew (a second at most: common/items.lua)
                local r, err = redis.call("HMGET", K.meta(item), "limit_per_user", "rebuilding")
                if type(r) ~= "table" then
                    why = { failure = "unavailable", err = err }
                elseif r[2] then
                    why = { refusal = "rebuilding", stock_after = 0 }
                elseif r[1] then
                    items.changed(item)
                    why = { failure = "busy", err = "the item's buckets changed; try again" }
                end
            end
            if why == nil then
                local epoch, err = redis.call("GET", K.epoch)
                if epoch == nil and err ~= nil then
                    why = { failure = "unavailable", err = err }
                elseif epoch and common.known_item(item) then
                    -- MySQL knows it: its keys vanished with the epoch intact (deleted, evicted); the loss watcher
                    -- rebuilds it (books/loss.lua), asked to look at it now
                    common.ask_rebuild(item)
                    why = { refusal = "rebuilding", stock_after = 0 }
                else
                    why = { refusal = epoch and "unknown_item" or "lost", stock_after = 0 }
                end
            end
            e.took = why
        end
    end
end

-- A take on a slot whose master just failed over to a replica would sell from a stock that may lack the master's
-- last writes: refused as "rebuilding" (503) until the loss watcher has compared the masters (books/cluster.lua marks the
-- item, then rebuilds it from MySQL). redis.failover_pending is a process-wide array read; false on a single Redis.
local function take_then_no_meta(take)
    return function(tag, entries)
        if redis.failover_pending(K.meta(tag)) then
            for _, e in ipairs(entries) do
                e.took = { refusal = "rebuilding", stock_after = 0 }
            end
            return
        end
        take(tag, entries)
        no_meta(tag, entries)
    end
end
M.take_then_no_meta = take_then_no_meta

return M
