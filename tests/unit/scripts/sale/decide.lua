-- tests/unit/scripts/sale/decide.lua: the buy decision (scripts/sale/decide.lua), the one source both strategies use:
-- each refusal, in the order it is checked, and nothing spent before window, limit and stock are checked.
local decide = require "sale.decide"

local function item(t)
    t = t or {}
    return { limit = t.limit or 2, starts_at = t.starts_at, ends_at = t.ends_at, rebuilding = t.rebuilding }
end

test("a buy within the window, the limit and the stock goes ahead", function()
    eq(decide(item(), 10, 0, 1, 1000), nil)
    eq(decide(item { limit = 3 }, 3, 0, 3, 1000), nil, "the whole limit and the whole stock at once")
    eq(decide(item { starts_at = 1000, ends_at = 2000 }, 1, 1, 1, 1000), nil, "at starts_at exactly")
    eq(decide(item { ends_at = 2000 }, 1, 0, 1, 1999), nil, "a millisecond before ends_at")
end)

test("an item being rebuilt refuses everything first", function()
    eq(decide(item { rebuilding = "1", starts_at = 5000 }, 0, 9, 9, 1000), "rebuilding")
end)

test("the window: not_started before starts_at, ended from ends_at on", function()
    eq(decide(item { starts_at = 1000 }, 10, 0, 1, 999), "not_started")
    eq(decide(item { ends_at = 2000 }, 10, 0, 1, 2000), "ended")
    eq(decide(item { starts_at = 1000, ends_at = 2000 }, 0, 5, 5, 500), "not_started", "before the limit and stock")
    eq(decide(item { ends_at = 2000 }, 0, 5, 5, 3000), "ended", "before the limit and stock")
end)

test("the limit: one buy above it, then the user's count", function()
    eq(decide(item { limit = 2 }, 10, 0, 3, 1000), "quantity_over_limit")
    eq(decide(item { limit = 2 }, 0, 0, 3, 1000), "quantity_over_limit", "before the stock")
    eq(decide(item { limit = 2 }, 10, 2, 1, 1000), "limit_exceeded")
    eq(decide(item { limit = 2 }, 10, 1, 2, 1000), "limit_exceeded", "what is bought counts with what is asked")
    eq(decide(item { limit = 2 }, 0, 2, 1, 1000), "limit_exceeded", "before the stock")
end)

test("the stock: sold_out when fewer units are left than asked", function()
    eq(decide(item(), 0, 0, 1, 1000), "sold_out")
    eq(decide(item { limit = 5 }, 2, 0, 3, 1000), "sold_out")
    eq(decide(item { limit = 5 }, 3, 0, 3, 1000), nil)
end)

test("it runs in Redis too: no integer division, goto or <close> (Lua 5.1)", function()
    local f = assert(io.open(SK_SCRIPTS .. "/sale/decide.lua"))
    local src = f:read("a")
    f:close()
    local code = src:gsub("%-%-[^\n]*", "")
    eq(code:find("//", 1, true), nil, "integer division")
    eq(code:find("goto", 1, true), nil, "goto")
    eq(code:find("<close>", 1, true), nil, "<close>")
end)
