-- sale/hold.lua: the stock a take holds for one order until the order is safe in Kafka (sale/stock.lua: the take
-- returns one, stock.adopt makes one for an order an earlier request took). Committed, the stock stays taken;
-- released, or gone out of scope neither, it is given back (books.compensate).
local books = require "books"

local M = {}

local Hold = {}
Hold.__index = Hold

function Hold:commit()
    self.state = "committed"
end

function Hold:release()
    self.state = "released"
    return books.compensate(self.order)
end

-- runs however the holder's scope ends; it must not yield (it may run while an errored coroutine is closed)
Hold.__close = function(self, err)
    if self.state ~= "held" then
        return
    end
    self.state = "released"
    log.error("order " .. self.order.order_id .. " of " .. self.order.item_id .. " left its handler neither committed "
        .. "nor released" .. (err ~= nil and (" (" .. tostring(err) .. ")") or "") .. "; giving its stock back")
    local ok, serr = pcall(spawn, books.compensate, self.order)
    if not ok then -- e.g. the server is stopping: the order stays queued and the sweeper settles it
        log.error("could not start the compensation of order " .. self.order.order_id .. ": " .. tostring(serr))
    end
end

local function hold(order)
    return setmetatable({ order = order, state = "held" }, Hold)
end
M.new = hold

return M
