-- sale/strategy.lua: the take of one batch of buys of an item (or of one of its stock buckets), both ways
-- (config.strategy), each deciding with sale/decide.lua: "watch" runs one optimistic transaction per batch, "eval"
-- runs redis/take_batch.lua. run(tag, entries) sets each entry's `took` (sale/stock.lua says what it holds).
local common = require "common"
local decide = require "sale.decide"
local K = common.keys

local M = {}

local strategy = config.strategy
if strategy ~= "watch" and strategy ~= "eval" then
    error("config.strategy must be \"watch\" or \"eval\", got " .. tostring(strategy))
end
M.strategy = strategy

local tries = config.redis.tries

-- After a Redis failure we cannot tell from the reply whether the writes were applied (the connection may have
-- broken after EXEC or EVALSHA went out). The order's own key says: present means the stock was taken and the
-- order must go on to Kafka like any other. Returns true (recorded), false (not), or nil (still cannot tell: the
-- order, if taken, is in its item's queued set, and the sweeper settles it).
local function recorded(order)
    for attempt = 1, 3 do
        local status, err = redis.call("HGET", K.order(order.order_id), "status")
        if status ~= nil or err == nil then
            return status == "queued"
        end
        sleep(50 * attempt)
    end
    log.error("outcome unknown for order " .. order.order_id .. " (item " .. order.item_id
        .. "): Redis failed around its transaction and cannot be asked; the sweeper settles it")
    return nil
end
M.recorded = recorded

-- ===== strategy "watch": one optimistic transaction per batch =====

-- the order as stored in Redis (status; the queued set holds it until it is in MySQL) and sent to Kafka
local function order_fields(order)
    return "item_id", order.item_id, "user_id", order.user_id, "quantity", order.quantity,
        "status", "queued", "created_at", order.created_at
end

-- decides every entry against one snapshot of the item and writes the accepted ones; sets entry.took
local function run_watch(item, entries) -- item: the item's tag, or its bucket's (common/buckets.lua)
    local users = {}
    for i, e in ipairs(entries) do
        users[i] = e.order.user_id
    end
    local res, err = redis.optimistic {
        watch = { K.stock(item), K.meta(item), K.users(item) },
        read = {
            { "GET", K.stock(item) },
            { "HMGET", K.meta(item), "limit_per_user", "starts_at", "ends_at", "rebuilding" },
            { "HMGET", K.users(item), table.unpack(users) },
        },
        tries = tries,
        fn = function(tx, r)
            local meta, counts = r[2] or {}, r[3] or {}
            local it = { limit = common.int_or_nil(meta[1]), starts_at = common.int_or_nil(meta[2]),
                         ends_at = common.int_or_nil(meta[3]), rebuilding = meta[4] or nil }
            local stock = common.int_or_nil(r[1]) or 0
            local bought, taken = {}, 0
            for i, e in ipairs(entries) do
                local o = e.order
                bought[o.user_id] = bought[o.user_id] or common.int_or_nil(counts[i]) or 0
                local refusal
                if it.limit == nil then
                    refusal = "no_meta" -- unknown, or lost with Redis's data: told apart after (sale/no_meta.lua)
                else
                    refusal = decide(it, stock - taken, bought[o.user_id], o.quantity, o.created_at)
                end
                if refusal == nil then
                    taken = taken + o.quantity
                    bought[o.user_id] = bought[o.user_id] + o.quantity
                end
                e.took = { refusal = refusal, stock_after = stock - taken }
            end
            if taken == 0 then
                return true -- nothing queued: the core UNWATCHes and sends no EXEC
            end
            -- the accepted buyers' new counts in one HSET (exact: the users hash is watched, so no count changed
            -- since it was read), their orders in one ZADD, and one HSET per order
            tx:queue("DECRBY", K.stock(item), taken)
            tx:queue("INCRBY", K.sold(item), taken)
            local counts_after, queued, seen = {}, {}, {}
            for _, e in ipairs(entries) do
                local o = e.order
                if e.took.refusal == nil then
                    if not seen[o.user_id] then
                        seen[o.user_id] = true
                        counts_after[#counts_after + 1] = o.user_id
                        counts_after[#counts_after + 1] = bought[o.user_id]
                    end
                    tx:queue("HSET", K.order(o.order_id), order_fields(o))
                    queued[#queued + 1] = o.created_at
                    queued[#queued + 1] = o.order_id
                end
            end
            tx:queue("HSET", K.users(item), table.unpack(counts_after))
            tx:queue("ZADD", K.queued(item), table.unpack(queued))
        end,
    }
    if res == nil or res == false then
        local failure = err == redis.CONFLICT and "busy" or "unavailable"
        for _, e in ipairs(entries) do
            e.took = { failure = failure, err = err }
            -- an I/O failure (not EXECABORT, not a conflict) may have come after EXEC was applied
            if res == nil and failure == "unavailable" and recorded(e.order) then
                e.took = { stock_after = -1 }
            end
        end
    end
end

-- ===== strategy "eval": the same decision inside Redis, one script call per batch =====
-- Buys of an item coalesce as in "watch", and redis/take_batch.lua decides for the whole batch in one call, so a
-- hot item costs Redis one script per batch instead of one per buyer.
local TAKE = "local decide = (function()\n" .. app.file("sale/decide.lua") .. "\nend)()\n"
    .. app.file("redis/take_batch.lua")

local function run_eval(item, entries) -- item: the item's tag, or its bucket's (common/buckets.lua)
    local keys = { K.stock(item), K.users(item), K.sold(item), K.meta(item), K.queued(item) }
    local args = { entries[1].order.item_id }
    for _, e in ipairs(entries) do
        local o = e.order
        keys[#keys + 1] = K.order(o.order_id)
        local n = #args
        args[n + 1], args[n + 2], args[n + 3], args[n + 4] = o.order_id, o.user_id, o.quantity, o.created_at
    end
    local res, err = redis.evalsha(TAKE, keys, args)
    for i, e in ipairs(entries) do
        local decision = type(res) == "table" and res[2 * i - 1]
        if type(decision) == "string" then
            e.took = { refusal = decision ~= "ok" and decision or nil, stock_after = res[2 * i] }
        elseif res == nil and recorded(e.order) then
            e.took = { stock_after = -1 } -- the script ran before the connection broke: the order stands
        else
            e.took = { failure = "unavailable", err = err or "unexpected reply from the take script" }
        end
    end
end
M.run_watch, M.run_eval = run_watch, run_eval

return M
