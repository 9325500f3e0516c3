-- sale/batches.lua: buys of one item coalesce, and each batch is one take (sale/strategy.lua): process-wide (the
-- C-owned `lane`) or per worker (sale/coalesce.lua), as config.sale.coalesce says. take(order) → the order's `took`.
-- The default follows the strategy: "process" for "watch", where takes of one item on two workers conflict (make
-- bench on 2 cores, 256 connections: ~29,500 buys/s with p99 18 ms per process vs ~23,000 with p99 250 ms and
-- retried conflicts per worker), "worker" for "eval", whose takes never conflict and gain from two in flight at once
-- (~36,000 per worker vs ~31,000 per process).
local coalesce = require "sale.coalesce"
local strategies = require "sale.strategy"
local no_meta = require "sale.no_meta"
local codec = require "sale.lane_codec"

local M = {}

local strategy, run_watch, run_eval = strategies.strategy, strategies.run_watch, strategies.run_eval
local take_then_no_meta = no_meta.take_then_no_meta
local encode_order, decode_order = codec.encode_order, codec.decode_order
local encode_took, decode_took = codec.encode_took, codec.decode_took
local sale = config.sale

-- ===== process-wide coalescing: one take per item in flight in the whole process =====
-- Buys of an item queue on its lane (`lane`, C-owned and shared by every worker); the first of them leads a batch:
-- it claims what queued from any worker, runs the take in its own VM, and hands each buyer its outcome as a string.
-- Each buyer then builds its own hold in its own coroutine. An order crosses as "order_id user_id quantity
-- created_at" (ids are [A-Za-z0-9_.:-]), an outcome as "o stock_after", "r refusal stock_after" or "f failure err".
local run = take_then_no_meta(strategy == "eval" and run_eval or run_watch)
local batch_max = sale.batch_max
local queue_wait_ms = sale.queue_wait_ms
local window_ms = sale.batch_window_ms
local bound_ms = config.http.deadline_ms
if bound_ms <= 0 then
    bound_ms = 60000 -- no request deadline: a follower still never waits for ever
end
local batches = metrics.counter("seckilld_sale_batches_total", { strategy = strategy })
local batched = metrics.counter("seckilld_sale_batched_buys_total", { strategy = strategy })

-- leads one batch of `item`: ours first, then what queued (from every worker); answers the others, returns ours
local function lead(batch, order)
    local b <close> = batch -- finishes with failures for the claimed buyers if anything below raises
    if window_ms > 0 then
        sleep(window_ms)
    end
    local entries = { { order = order } }
    for i, p in ipairs(b:claim(batch_max - 1)) do
        entries[i + 1] = { order = decode_order(order.tag, p) }
    end
    batches()
    batched(#entries)
    local ok, err = pcall(run, order.tag, entries)
    if not ok then
        err = tostring(err)
        log.error("take batch for " .. order.item_id .. " failed: " .. err)
        b:finish({}) -- every other buyer gets nil, "batch failed"
        return { failure = "unavailable", err = err }
    end
    local results = {}
    for i = 2, #entries do
        results[i - 1] = encode_took(entries[i].took)
    end
    b:finish(results)
    return entries[1].took
end

local take_coalesced = function(order)
    local r, err = lane.submit(order.tag, encode_order(order), queue_wait_ms, bound_ms)
    if r == nil then
        return { failure = err == "busy" and "busy" or "unavailable", err = err }
    elseif type(r) == "string" then
        return decode_took(r)
    end
    return lead(r, order)
end

-- config.sale.coalesce = "worker": the same batches, one lane per item on each worker (no cross-thread hand-off)
local mode = sale.coalesce or (strategy == "watch" and "process" or "worker")
if mode ~= "process" and mode ~= "worker" then
    error("config.sale.coalesce must be \"process\" or \"worker\", got " .. tostring(mode))
end
M.coalesce = mode
if mode == "worker" then
    local lanes = coalesce.new(function(item, entries)
        batches()
        batched(#entries)
        return run(item, entries)
    end, { batch_max = batch_max, wait_ms = queue_wait_ms })
    take_coalesced = function(order)
        local entry = { order = order }
        local ok, err = lanes:submit(order.tag, entry)
        if not ok then
            return { failure = err == "busy" and "busy" or "unavailable", err = err }
        end
        return entry.took
    end
end
M.take = take_coalesced

return M
