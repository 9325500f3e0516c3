-- docs/: what a person reads in a browser, served from memory: GET /openapi.json (docs/openapi.json, the contract
-- of API.md), Swagger UI at /api-docs (the swagger-ui-dist distribution that deps/install.sh installs, pinned, into
-- /opt/seckilld/npm; SECKILLD_SWAGGER_UI names another folder), and the live dashboard at /dashboard
-- (docs/dashboard.html and .js, with Chart.js from Debian's libjs-chart.js; its numbers come from stats.lua), and
-- the waiting room's page at /queue/{item_id} (docs/queue.html with docs/queue.js inlined: one answer, no other file).
-- Every file is read once, while the scripts load (static.read runs on the main thread, never on a loop); a reload
-- reads them again. A distribution that is not installed is answered 503 with what to install.
local common = require "common"

local M = {}

local SWAGGER_DIR = os.getenv("SECKILLD_SWAGGER_UI") or "/opt/seckilld/npm/node_modules/swagger-ui-dist"
local CHART_JS = "/usr/share/javascript/chart.js/chart.min.js"

local TYPES = {
    html = "text/html; charset=utf-8", css = "text/css; charset=utf-8", js = "text/javascript; charset=utf-8",
    png = "image/png", json = "application/json; charset=utf-8",
}

-- a file of the scripts folder that must be there: a missing one fails the load (and `seckilld -t`)
local function own(path)
    local text, err = static.read(path)
    if text == nil then
        error("docs: cannot read " .. path .. " in the scripts folder: " .. err)
    end
    return text
end

-- a file as a response: body and headers (the distributions change only with a reinstall and a reload)
local function asset(name, text)
    return { body = text, headers = { ["content-type"] = TYPES[name:match("%.(%w+)$")],
                                      ["cache-control"] = "public, max-age=300" } }
end

local openapi = own("docs/openapi.json")
local ok, doc = pcall(json.decode, openapi)
if not ok or type(doc) ~= "table" or type(doc.openapi) ~= "string" then
    error("docs/openapi.json is not a JSON OpenAPI document: " .. tostring(doc))
end

-- ===== Swagger UI =====
local swagger = {}
local swagger_missing
for _, name in ipairs { "swagger-ui.css", "index.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js",
                        "favicon-32x32.png", "favicon-16x16.png", "index.html" } do
    local text, err = static.read(SWAGGER_DIR .. "/" .. name)
    if text == nil then
        swagger_missing = SWAGGER_DIR .. "/" .. name .. ": " .. err
        break
    end
    swagger[name] = asset(name, text)
end
if swagger_missing then
    log.info("Swagger UI is not installed (" .. swagger_missing .. "); /api-docs answers 503 (run deps/install.sh)")
    swagger = {}
else
    -- the distribution's own page, its relative links made absolute (it is served at /api-docs, not /api-docs/)
    local page = swagger["index.html"].body
    page = page:gsub('(%a+)="%./', '%1="/api-docs/'):gsub('href="index%.css"', 'href="/api-docs/index.css"')
    swagger["index.html"] = asset("index.html", page)
    swagger["swagger-initializer.js"] = asset("swagger-initializer.js", own("docs/swagger-initializer.js"))
end

local chart, chart_err = static.read(CHART_JS)
local dashboard = {
    ["index.html"] = asset("index.html", own("docs/dashboard.html")),
    ["dashboard.js"] = asset("dashboard.js", own("docs/dashboard.js")),
    ["chart.js"] = chart and asset("chart.js", chart) or nil,
}

-- the waiting room's page (v1.2): the same page for every item, which it reads from its own address; the script is
-- inlined where queue.html names it, so the page needs no route of its own beside GET /queue/{item_id}
local queue_js = own("docs/queue.js")
if queue_js:find("</script", 1, true) then
    error("docs/queue.js must not contain </script (it is inlined into docs/queue.html)")
end
local queue_html, inlined = own("docs/queue.html"):gsub('<script src="queue%.js"></script>', function()
    return "<script>\n" .. queue_js .. "</script>"
end)
if inlined ~= 1 then
    error('docs/queue.html must name its script once, as <script src="queue.js"></script>')
end
local queue_page = {
    body = queue_html,
    -- no-cache: a reload after a new version of the scripts gets the new page (the place is in sessionStorage)
    headers = { ["content-type"] = TYPES.html, ["cache-control"] = "no-cache" },
}

local function serve(files, name, missing)
    local f = files[name]
    if f == nil then
        if missing then
            return common.fail(503, "unavailable", missing)
        end
        return common.fail(404, "not_found", "no such file")
    end
    return 200, f.body, f.headers
end

-- GET /openapi.json
function M.openapi()
    return 200, openapi, { ["content-type"] = TYPES.json, ["access-control-allow-origin"] = "*" }
end

local swagger_503 = swagger_missing and ("Swagger UI is not installed on this machine (" .. swagger_missing
    .. "); run deps/install.sh") or nil

-- GET /api-docs, GET /api-docs/{file}
function M.api_docs()
    return serve(swagger, "index.html", swagger_503)
end

function M.api_docs_file(req)
    local name = req.params.file
    if swagger_503 and name ~= nil then
        return common.fail(503, "unavailable", swagger_503)
    end
    if name == "index.html" then
        return common.fail(404, "not_found", "no such file")
    end
    return serve(swagger, name)
end

-- GET /dashboard, GET /dashboard/{file}
function M.dashboard()
    return serve(dashboard, "index.html")
end

function M.dashboard_file(req)
    local name = req.params.file
    if name == "chart.js" and chart == nil then
        return common.fail(503, "unavailable", "Chart.js is not installed on this machine (" .. CHART_JS .. ": "
            .. tostring(chart_err) .. "); run deps/install.sh (libjs-chart.js)")
    end
    if name == "index.html" then
        return common.fail(404, "not_found", "no such file")
    end
    return serve(dashboard, name)
end

-- GET /queue/{item_id}: the page a person waits on. Any well-formed item id gets it: whether the item exists and
-- has a waiting room is what joining answers, on the page.
function M.queue_page(req)
    if not common.valid_id(req.params.item_id) then
        return common.bad_request("item_id must be 1-64 characters of A-Za-z0-9_.:-")
    end
    return 200, queue_page.body, queue_page.headers
end

return M
