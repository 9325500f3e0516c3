-- app.lua: the flash sale's HTTP application (API.md). The core calls this file to declare the routes.
local common = require "common"
local buy = require "buy"
local orders = require "orders"
local admin = require "admin"
local loss = require "books.loss"
local sweep = require "books.sweep"

app.route("POST", "/seckill/add", buy.handle)
app.route("GET", "/order/{order_id}", orders.get)
app.route("GET", "/orders", orders.list)
app.route("PUT", "/admin/items/{item_id}", admin.put)
app.route("GET", "/admin/items/{item_id}", admin.get)
app.route("GET", "/admin/items/{item_id}/audit", admin.audit)

-- the books' guards (books/), on one worker of each process: Redis losing its data, and orders left queued
app.every("books.loss", common.settings.watch_ms, loss.watch)
app.every("books.sweep", common.settings.sweep_ms, sweep.run)

-- items listed in the config are set up at start-up only if neither Redis nor MySQL knows them: a restart never
-- resets a sale, and an item Redis lost is rebuilt (books/), not armed again. If Redis or MySQL is not up yet,
-- keep trying (with backoff) while the server already serves.
local function setup_configured(it)
    local id = it.id or it.item_id
    if not common.valid_id(id) or math.type(it.stock) ~= "integer" then
        log.warn("config.items: an entry needs id (1-64 of A-Za-z0-9_.:-) and an integer stock")
        return true
    end
    local item, err = common.setup_item(id, it.stock, it.limit_per_user or 1, it.starts_at, it.ends_at, true)
    if item then
        log.info("item " .. id .. " set up with stock " .. it.stock)
    elseif err == "exists" then
        log.info("item " .. id .. " exists; left as it is")
    else
        log.warn("item " .. id .. " not set up yet: " .. tostring(err))
        return false
    end
    return true
end

app.init(function()
    pcall(loss.watch) -- first: a loss must be seen before any item is looked at
    local pending, delay = config.items or {}, 200
    while #pending > 0 do
        local retry = {}
        for _, it in ipairs(pending) do
            if not setup_configured(it) then
                retry[#retry + 1] = it
            end
        end
        pending = retry
        if #pending > 0 then
            sleep(delay)
            delay = math.min(delay * 2, 5000)
        end
    end
end)
