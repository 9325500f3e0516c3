-- tests/unit/scripts/sale/lane_codec.lua: an order and its outcome as strings (scripts/sale/lane_codec.lua), as the
-- process-wide lane carries them between workers: whatever crosses comes back the same.
local codec = require "sale.lane_codec"

test("an order crosses as \"order_id user_id quantity created_at\"", function()
    local o = { order_id = "3x.k0f1e2d", item_id = "phone", tag = "phone", user_id = "u:1-a_b.c", quantity = 3,
                created_at = 1733000000123 }
    local s = codec.encode_order(o)
    eq(s, "3x.k0f1e2d u:1-a_b.c 3 1733000000123")
    eq(codec.decode_order("phone", s), o)
end)

test("an order of a stock bucket keeps its bucket's tag and finds its item", function()
    local o = codec.decode_order("phone#5", "ab.12 alice 1 7")
    eq(o, { order_id = "ab.12", item_id = "phone", tag = "phone#5", user_id = "alice", quantity = 1, created_at = 7 })
    eq(math.type(o.quantity), "integer")
    eq(math.type(o.created_at), "integer")
end)

test("an outcome: taken, refused or failed", function()
    for _, t in ipairs {
        { stock_after = 41 },
        { stock_after = -1 }, -- taken, the stock left unknown (an outcome told after a Redis failure)
        { refusal = "sold_out", stock_after = 0 },
        { refusal = "limit_exceeded", stock_after = 12 },
        { refusal = "rebuilding", stock_after = 0 },
        { failure = "busy", err = "conflict" },
        { failure = "unavailable", err = "redis: connection lost: reset by peer" }, -- spaces in the error
    } do
        eq(codec.decode_took(codec.encode_took(t)), t)
    end
    eq(codec.encode_took { stock_after = 5 }, "o 5")
    eq(codec.encode_took { refusal = "ended", stock_after = 3 }, "r ended 3")
    eq(codec.encode_took { failure = "busy", err = "x y" }, "f busy x y")
end)

test("a failure without a message crosses as the string nil", function()
    eq(codec.decode_took(codec.encode_took { failure = "unavailable" }), { failure = "unavailable", err = "nil" })
end)
