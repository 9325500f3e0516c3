-- sale/stock.lua: taking an item's stock for a buy, and holding it until the order is safe.
--
--   local took = stock.take(order)
--     { hold = h, stock_after = n }          the stock is taken and held for this order
--     { refusal = code, stock_after = n }    nothing was taken: "unknown_item", "not_started", "ended",
--                                            "quantity_over_limit", "limit_exceeded", "sold_out", "lost", "rebuilding"
--     { failure = "busy" | "unavailable", err = msg }   nothing was taken (or it could not be told, and the order
--                                            stays queued for the sweeper: books/)
--   local hold <close> = took.hold
--   h:commit()     the order is safe in Kafka: the stock stays taken
--   h:release()    Kafka refused it: give the stock back now (returns "restored", "stands" or "failed")
--   A hold that goes out of scope neither committed nor released — an error, an early return in an edited
--   handler — gives its stock back by itself (compensation spawned from its __close), so no path strands stock.
--
--   stock.adopt(order)  a hold for an order whose stock an earlier request took and did not see through (an
--                       idempotent retry taking over, admission/idempotency.lua)
--   stock.sold_out(item)   the process-wide sold-out mark: 409 without asking Redis (a 1 s hint, Redis decides)
--
-- Parts, each a file under sale/: the take of one batch of an item's buys, "watch" or "eval" (config.strategy),
-- both deciding with decide.lua (strategy.lua); what a take that found no meta answers (no_meta.lua); buys of an item
-- coalescing into those batches, process-wide on the C-owned `lane` (its strings: lane_codec.lua) or per worker
-- (coalesce.lua), as config.sale.coalesce says (batches.lua); the rest of an order of a bucketed item taken from its
-- other buckets (gather.lua); the hold (hold.lua).
local common = require "common"
local buckets = require "common.buckets"
local items = require "common.items"
local strategy = require "sale.strategy"
local batches = require "sale.batches"
local hold = require("sale.hold").new
local gather = require("sale.gather").gather

local M = {}

M.strategy = strategy.strategy
M.coalesce = batches.coalesce
M.adopt = hold
local take_coalesced = batches.take

-- ===== the sold-out mark =====
function M.sold_out(item)
    return shared.get(common.soldout_key(item)) ~= nil
end

local function mark(order, took)
    -- a bucket of a bucketed item may be empty while others are not: only a refusal after a whole pass marks it
    if (order.buckets or 1) > 1 and not took.everywhere then
        return
    end
    if took.stock_after == 0 and (took.hold or took.refusal == "sold_out") then
        shared.set(common.soldout_key(order.item_id), true, common.SOLDOUT_TTL_MS)
    end
end

-- Where an order of `order.item_id` by `order.user_id` is taken: its user's bucket (the item's own tag unless the item
-- has buckets). Sets order.tag, order.buckets and the order's id, which carries that tag's slot token (`unique`: the
-- id's own part, a uuid unless given). nil and an error when the item's settings cannot be read (Redis is down).
function M.place(order, unique)
    local settings, err = items.get(order.item_id)
    if settings == nil then
        return nil, err
    end
    local k = settings and settings.buckets or 1
    order.buckets, order.bucket = k, buckets.of_user(order.user_id, k)
    order.tag = buckets.tag(order.item_id, order.bucket)
    if settings == false and err == "unlisted" then -- no item: refused without Redis (buy.lua's take), no id made
        order.unlisted = true
        return true
    end
    order.order_id = common.order_id(order.tag, unique or uuid())
    order.settings = settings -- the item's settings this buy was placed with (buy.lua: the order's deadline)
    return true
end

function M.take(order)
    order.tag = order.tag or order.item_id
    local took = take_coalesced(order)
    if took.refusal == "sold_out" and (order.buckets or 1) > 1 then
        took = gather(order, took.stock_after)
    end
    if took.failure == nil then
        if took.refusal == nil then
            took.hold = hold(order)
        end
        mark(order, took)
    end
    return took
end

return M
