-- sale/gather.lua: an order of a bucketed item whose user's bucket is short (common/buckets.lua): the rest taken
-- from the other buckets as parts, and the order recorded in the user's bucket.
local common = require "common"
local books = require "books"
local buckets = require "common.buckets"
local strategy = require "sale.strategy"
local K = common.keys

local M = {}

local recorded = strategy.recorded

-- ===== stock buckets (common/buckets.lua): the rest of an order from the other buckets =====
local PART = common.redis_script("take_part")
local FINAL = "local decide = (function()\n" .. app.file("sale/decide.lua") .. "\nend)()\n"
    .. app.file("redis/take_final.lua")

local function part_keys(tag, order_id)
    return { K.stock(tag), K.sold(tag), K.meta(tag), K.parts(tag), K.part(tag, order_id) }
end

-- gives back the parts of an order that was not recorded (one that cannot be now stays held: the sweeper gives it
-- back, as its order never appears)
local function give_back(order, parts)
    if #parts > 0 then
        books.settle_parts(order.order_id, order.item_id, buckets.encode_parts(parts), "return")
        shared.delete(common.soldout_key(order.item_id)) -- units came back (a mark set meanwhile is a 1 s hint)
    end
end

-- The user's bucket had fewer than `quantity` units (`short` of them): take the rest from the other buckets, each a
-- part, then record the order in the user's bucket with the units it still holds. A bucket that gives less than was
-- asked is empty; when the others are empty and the user's bucket is short, every part goes back: sold_out.
local function gather(order, short)
    local item, q, k = order.item_id, order.quantity, order.buckets
    local home = buckets.of_user(order.user_id, k)
    for b = 0, k - 1 do
        if redis.failover_pending(K.meta(buckets.tag(item, b))) then
            -- a bucket whose master just failed over may sell a stale stock: not a part of it (take_then_no_meta)
            return { refusal = "rebuilding", stock_after = 0 }
        end
    end
    local parts, by_bucket, got = {}, {}, 0
    for _ = 1, 4 do
        local want = q - got - math.max(short or 0, 0)
        for i = 1, k - 1 do
            if want <= 0 then
                break
            end
            local b = (home + i) % k
            local tag = buckets.tag(item, b)
            local n, err = redis.evalsha(PART, part_keys(tag, order.order_id), { order.order_id, want, math.floor(now()) })
            if type(n) ~= "number" then -- a part it may have taken stays held: the sweeper gives it back
                give_back(order, parts)
                return { failure = "unavailable", err = err or "unexpected reply from the part script" }
            end
            if n > 0 then
                if by_bucket[b] == nil then
                    by_bucket[b] = { b = b, units = 0 }
                    parts[#parts + 1] = by_bucket[b]
                end
                by_bucket[b].units = by_bucket[b].units + n
                got, want = got + n, want - n
            end
        end
        local r, err = redis.evalsha(FINAL,
            { K.stock(order.tag), K.users(order.tag), K.sold(order.tag), K.meta(order.tag), K.queued(order.tag),
              K.order(order.order_id) },
            { item, order.order_id, order.user_id, q, q - got, order.created_at, buckets.encode_parts(parts) })
        if type(r) ~= "table" then
            local was = r == nil and recorded(order)
            if was then
                return { stock_after = -1 } -- the script ran before the connection broke: the order stands
            elseif was == false then
                give_back(order, parts)
            end -- nil: cannot tell; its parts stay held and the sweeper settles them with the order
            return { failure = "unavailable", err = err or "unexpected reply from the take script" }
        end
        if r[1] == "ok" then
            return { stock_after = r[2] }
        end
        if r[1] ~= "short" then
            give_back(order, parts)
            return { refusal = r[1] == "no_meta" and "rebuilding" or r[1], stock_after = r[2] }
        end
        short = r[2]
        if want > 0 then -- the others gave less than asked: they are empty, and this bucket is short
            break
        end
    end
    give_back(order, parts)
    -- what the whole item has left: this bucket's units and the parts given back (the others are empty); the
    -- process-wide sold-out mark is set only when that is nothing
    return { refusal = "sold_out", stock_after = math.max(short or 0, 0) + got, everywhere = true }
end
M.gather = gather

return M
