-- tests/unit/scripts/layers.lua: the scripts' modules stand in layers, and their require graph has no cycle.
--
--   0 base       common.lua and common/ (key names, settings, the bucket layout, the item's cached settings)
--   1 books      books/: Redis's books kept true to MySQL (compensation, barriers, the loss watch, the sweeper)
--   2 the sale   sale/ (taking stock), admission/ (who may try) and life/ (the order's life after the buy: pay,
--                cancel, expire, release): peers, none requires another
--   3 handlers   the top-level files (app, buy, admin, orders, payments, token, stats, consumer) and docs/
--
-- A module may require modules of lower layers, and of its own package (its folder, or the top level for a
-- handler); never one above it, nor a peer package of its layer. Redis-side scripts (redis/) are no modules.
-- The graph is read from the sources (require "name" / require("name")), not by loading them.

local LAYERS = { common = 0, books = 1, sale = 2, admission = 2, life = 2, docs = 3 }
local TOP = 3 -- a top-level file (no folder) is a handler, but for common.lua
local NAMES = { [0] = "base", "books", "the sale", "handlers" }

-- the package a module belongs to: its folder, "common" for common.lua, "" for another top-level file
local function package(module)
    local pkg = module:match("^([^.]+)%.")
    if pkg then
        return pkg
    end
    if module == "common" or LAYERS[module] then
        return module
    end
    return ""
end

local function layer(module)
    local pkg = package(module)
    if pkg == "" then
        return TOP
    end
    return LAYERS[pkg]
end

-- every problem with a graph ({ module = { required, ... } }), as sorted messages: an unknown package, a
-- requirement of an unknown module, one above the module's layer or of a peer package, a cycle
local function problems(graph)
    local out, seen = {}, {}
    local function say(msg)
        if not seen[msg] then
            seen[msg] = true
            out[#out + 1] = msg
        end
    end
    local modules = {}
    for m in pairs(graph) do
        modules[#modules + 1] = m
    end
    table.sort(modules)
    for _, m in ipairs(modules) do
        if layer(m) == nil then
            say(m .. ": its folder " .. package(m) .. "/ has no layer (LAYERS in tests/unit/scripts/layers.lua)")
        end
    end
    for _, m in ipairs(modules) do
        for _, r in ipairs(graph[m]) do
            local lm, lr = layer(m), layer(r)
            if graph[r] == nil then
                say(m .. " requires " .. r .. ", which is no script")
            elseif lm and lr then
                if lr > lm then
                    say(m .. " (" .. NAMES[lm] .. ") requires " .. r .. " (" .. NAMES[lr] .. "), a layer above it")
                elseif lr == lm and lm < TOP and package(r) ~= package(m) then
                    say(m .. " requires " .. r .. ": " .. package(m) .. "/ and " .. package(r) .. "/ are peers ("
                        .. NAMES[lm] .. "), neither requires the other")
                end
            end
        end
    end
    -- cycles: a depth-first walk; a requirement of a module still on the path closes one
    local state, path = {}, {}
    local function walk(m)
        state[m] = "open"
        path[#path + 1] = m
        for _, r in ipairs(graph[m] or {}) do
            if state[r] == "open" then
                local from
                for i, p in ipairs(path) do
                    if p == r then
                        from = i
                    end
                end
                say("a require cycle: " .. table.concat(path, " -> ", from) .. " -> " .. r)
            elseif state[r] == nil and graph[r] then
                walk(r)
            end
        end
        path[#path] = nil
        state[m] = "done"
    end
    for _, m in ipairs(modules) do
        if state[m] == nil then
            walk(m)
        end
    end
    table.sort(out)
    return out
end

-- the scripts' graph, read from scripts/
local function graph_of_scripts()
    local graph = {}
    for _, path in ipairs(lua_files(SK_SCRIPTS)) do
        if not path:find("^redis/") then
            local module = path:gsub("%.lua$", ""):gsub("/init$", ""):gsub("/", ".")
            local f = assert(io.open(SK_SCRIPTS .. "/" .. path))
            local code = f:read("a"):gsub("%-%-%[(=*)%[.-%]%1%]", ""):gsub("%-%-[^\n]*", "") -- comments out
            f:close()
            local requires, dup = {}, {}
            for _, name in code:gmatch("%f[%w_]require%s*%(?%s*([\"'])([%w_.]+)%1") do
                if not dup[name] then
                    dup[name] = true
                    requires[#requires + 1] = name
                end
            end
            graph[module] = requires
        end
    end
    return graph
end

local scripts = graph_of_scripts()

test("the scripts' modules are where the layers expect them", function()
    for _, m in ipairs { "common", "common.buckets", "common.items", "books", "books.loss", "sale.stock",
                         "sale.decide", "admission", "admission.idempotency", "buy", "app", "docs" } do
        eq(scripts[m] ~= nil, true, m .. " found")
    end
    eq(scripts["redis.take_batch"], nil, "Redis-side scripts are no modules")
    eq(layer("common"), 0)
    eq(layer("common.items"), 0)
    eq(layer("books.sweep"), 1)
    eq(layer("sale.stock"), 2)
    eq(layer("admission"), 2)
    eq(layer("buy"), 3)
    eq(layer("docs"), 3)
end)

test("the graph is read from the sources: buy requires what it calls", function()
    local r = {}
    for _, name in ipairs(scripts.buy) do
        r[name] = true
    end
    eq(r, { common = true, ["sale.stock"] = true, ["sale.request"] = true, admission = true,
            ["admission.idempotency"] = true, ["common.items"] = true })
    eq(scripts["sale.decide"], {}, "sale/decide.lua requires nothing")
    eq(scripts["common.buckets"], {}, "common/buckets.lua requires nothing")
end)

test("the scripts stand in their layers, with no require cycle", function()
    eq(problems(scripts), {})
end)

-- the check itself fails loudly on what it is for
test("a lower layer requiring a higher one is a problem", function()
    eq(problems { common = { "sale.stock" }, ["sale.stock"] = {} },
        { "common (base) requires sale.stock (the sale), a layer above it" })
    eq(problems { books = { "buy" }, buy = {} }, { "books (books) requires buy (handlers), a layer above it" })
end)

test("sale/ and admission/ requiring each other is a problem", function()
    eq(problems { ["sale.request"] = { "admission" }, admission = {} },
        { "sale.request requires admission: sale/ and admission/ are peers (the sale), neither requires the other" })
end)

test("a cycle is a problem, in a package or among handlers", function()
    eq(problems { ["sale.a"] = { "sale.b" }, ["sale.b"] = { "sale.c" }, ["sale.c"] = { "sale.a" } },
        { "a require cycle: sale.a -> sale.b -> sale.c -> sale.a" })
    eq(problems { admin = { "stats" }, stats = { "admin" } }, { "a require cycle: admin -> stats -> admin" })
end)

test("an unknown folder or module is a problem", function()
    eq(problems { ["waiting.room"] = {} },
        { "waiting.room: its folder waiting/ has no layer (LAYERS in tests/unit/scripts/layers.lua)" })
    eq(problems { buy = { "nothing.here" } }, { "buy requires nothing.here, which is no script" })
end)
