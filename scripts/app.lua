-- app.lua: the flash sale's HTTP application (API.md). The core calls this file to declare the routes.
local common = require "common"
local buy = require "buy"
local orders = require "orders"
local admin = require "admin"
local token = require "token"
local docs = require "docs"
local stats = require "stats"
local admission = require "admission"
local items = require "common.items"
local loss = require "books.loss"
local sweep = require "books.sweep"
local payments = require "payments"
local expire = require "life.expire"
local waiting = require "waiting"
local queue = require "admission.queue"

-- what the access log shows of a request beside its method, path, status and latency: a route parameter of these
-- names, or what a handler says with req:annotate{...}
app.access_log_fields { "item_id", "user_id", "order_id" }

app.route("POST", "/seckill/add", stats.counted(buy.handle)) -- counted for the dashboard (stats.lua)
app.route("POST", "/seckill/token", token.issue)
app.route("GET", "/time", function()
    return { ok = true, now = math.floor(now()) }
end)
app.route("GET", "/order/{order_id}", orders.get)
app.route("GET", "/orders", orders.list)
-- v1.2, the order's life (life/): the buyer cancels; the payment provider confirms a payment (signed webhook)
app.route("POST", "/order/{order_id}/cancel", orders.cancel)
app.route("POST", "/payments/callback", payments.callback, { shed = false }) -- a shed payment is retried late: never
-- v1.2, the waiting room (admission/queue.lua): a place, where it stands (from the ticket: no Redis), and the page a
-- person waits on (declared after /queue/status: the first declared match wins)
app.route("POST", "/queue/join", waiting.join)
app.route("GET", "/queue/status", waiting.status)
app.route("GET", "/queue/{item_id}", docs.queue_page)
-- the operator's routes are never shed (http.max_inflight): they are how one looks at, and fixes, an overloaded server
app.route("PUT", "/admin/items/{item_id}", admin.put, { shed = false })
app.route("GET", "/admin/items/{item_id}", admin.get, { shed = false })
app.route("GET", "/admin/items/{item_id}/audit", admin.audit, { shed = false })
app.route("GET", "/admin/stats", stats.handle, { shed = false })

-- what a person reads in a browser (docs/): the OpenAPI document, Swagger UI, the live sale dashboard
app.route("GET", "/openapi.json", docs.openapi)
app.route("GET", "/api-docs", docs.api_docs)
app.route("GET", "/api-docs/{file}", docs.api_docs_file)
app.route("GET", "/dashboard", docs.dashboard)
app.route("GET", "/dashboard/{file}", docs.dashboard_file)

-- the books' guards (books/), on one worker of each process: Redis losing its data, and orders left queued
-- every item's id on this process's list, so that a made-up id costs no Redis command (common/items.lua)
app.every("items.list", common.LIST_MS, items.refresh_list)
app.every("books.loss", common.settings.watch_ms, loss.watch)
app.every("books.sweep", common.settings.sweep_ms, sweep.run)
-- the order's life: unpaid orders expire, cancelled and expired ones give their units back (life/expire.lua)
app.every("life.expire", config.sale.expire_ms, expire.run)
-- the waiting rooms: each draw sealed at its start and kept in MySQL (admission/queue.lua)
app.every("queue.draws", 500, queue.keep_draws)

-- items listed in the config are set up at start-up only if neither Redis nor MySQL knows them: a restart never
-- resets a sale, and an item Redis lost (all its data, or only this item's keys) is rebuilt (books/), not armed
-- again. If Redis or MySQL is not up yet,
-- keep trying (with backoff) while the server already serves.
local function setup_configured(it)
    local id = it.id or it.item_id
    if not common.valid_id(id) or math.type(it.stock) ~= "integer" then
        log.warn("config.items: an entry needs id (1-64 of A-Za-z0-9_.:-) and an integer stock")
        return true
    end
    local settings, aerr = admin.admission_settings(it)
    if settings == nil then
        log.warn("config.items: item " .. id .. ": " .. aerr)
        return true
    end
    local item, err = common.setup_item(id, it.stock, it.limit_per_user or 1, it.starts_at, it.ends_at, true,
        items.encode(settings))
    if item then
        log.info("item " .. id .. " set up with stock " .. it.stock)
    elseif err == "exists" then
        -- known to MySQL, and perhaps not to Redis (its keys deleted or evicted, the epoch intact): then it is
        -- paused and rebuilt from MySQL (books/loss.lua), never armed again
        local marked, merr = loss.repair { id }
        if marked == nil then
            log.warn("item " .. id .. " not compared with Redis yet: " .. tostring(merr))
            return false
        elseif marked == 0 then
            log.info("item " .. id .. " exists; left as it is")
        end
    else
        log.warn("item " .. id .. " not set up yet: " .. tostring(err))
        return false
    end
    return true
end

-- `seckilld -t` loads this file: an item that requires tokens on a server that cannot sign them is a config error
for _, it in ipairs(config.items or {}) do
    if type(it) == "table" and it.require_token and not admission.tokens.configured() then
        error("config.items: item " .. tostring(it.id or it.item_id) .. " requires purchase tokens but no token_secret "
            .. "is configured (set token_secret or SECKILLD_TOKEN_SECRET)")
    end
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
