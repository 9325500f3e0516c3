-- sale/decide.lua: the buy decision, the one source both strategies use. The "watch" strategy requires it and
-- decides in this VM; the "eval" strategy prepends it to redis/take_batch.lua (and sale/gather.lua to
-- redis/take_final.lua), so Redis decides with the same code. It is therefore written in the Lua both understand
-- (Redis runs Lua 5.1: no integer division, no goto, no <close>).
--
-- item: { limit = n, starts_at = ms or nil, ends_at = ms or nil, rebuilding = truthy or nil }
-- Returns nil when the buy may go ahead, else the refusal: "rebuilding", "not_started", "ended",
-- "quantity_over_limit", "limit_exceeded" or "sold_out". Window, limit and stock are checked before anything is spent.
local function decide(item, stock, bought, quantity, now_ms)
    if item.rebuilding then
        return "rebuilding"
    end
    if item.starts_at and now_ms < item.starts_at then
        return "not_started"
    end
    if item.ends_at and now_ms >= item.ends_at then
        return "ended"
    end
    if quantity > item.limit then
        return "quantity_over_limit"
    end
    if bought + quantity > item.limit then
        return "limit_exceeded"
    end
    if stock < quantity then
        return "sold_out"
    end
    return nil
end

return decide
