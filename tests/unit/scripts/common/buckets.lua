-- tests/unit/scripts/common/buckets.lua: a hot item's stock over K hash tags (scripts/common/buckets.lua): the tags,
-- the user's bucket, the shares of the stock and an order's parts as its hash keeps them.
redis = { slot = function(s) -- a stand-in for the binding's CRC16 slot: any fixed function of the string will do
    local h = 0
    for i = 1, #s do
        h = (h * 31 + s:byte(i)) % 16384
    end
    return h
end }
local B = require "common.buckets"

test("bucket 0 is the item's own tag, bucket b is item#b", function()
    eq(B.tag("phone", 0), "phone")
    eq(B.tag("phone", 1), "phone#1")
    eq(B.tag("a.b:c", 63), "a.b:c#63")
end)

test("item_of gives every bucket's tag back its item", function()
    for _, item in ipairs { "phone", "a.b:c", "x-1_2", "9" } do
        for b = 0, 7 do
            eq(B.item_of(B.tag(item, b)), item, item .. " bucket " .. b)
        end
    end
    eq(B.item_of("phone#"), "phone#", "no number: not a bucket's tag (# is no id character anyway)")
end)

test("of_user: bucket 0 without buckets, else the user's slot mod K", function()
    eq(B.of_user("alice", 1), 0)
    eq(B.of_user("alice", 0), 0)
    for _, user in ipairs { "alice", "bob", "u-17", "k" } do
        local b = B.of_user(user, 8)
        eq(b, redis.slot(user) % 8, user)
        eq(B.of_user(user, 8), b, user .. " always buys in the same bucket")
    end
end)

test("shares: the stock spread as evenly as can be, the first buckets one more", function()
    eq(B.shares(10, 1), { [0] = 10 })
    eq(B.shares(10, 4), { [0] = 3, 3, 2, 2 })
    eq(B.shares(3, 4), { [0] = 1, 1, 1, 0 })
    eq(B.shares(0, 3), { [0] = 0, 0, 0 })
    for _, c in ipairs { { 1000000000, 64 }, { 7, 7 }, { 65, 64 } } do
        local stock, k = c[1], c[2]
        local s, sum, lo, hi = B.shares(stock, k), 0, math.huge, -1
        for b = 0, k - 1 do
            eq(math.type(s[b]), "integer", "share " .. b)
            sum, lo, hi = sum + s[b], math.min(lo, s[b]), math.max(hi, s[b])
        end
        eq(sum, stock, "the shares add up to the stock")
        eq(hi - lo <= 1, true, "no share more than one above another")
        eq(s[k], nil, "no bucket beyond k - 1")
    end
end)

test("an order's parts: encoded as its hash keeps them, decoded back", function()
    local parts = { { b = 1, units = 2 }, { b = 7, units = 10 } }
    eq(B.encode_parts(parts), "1:2 7:10")
    eq(B.decode_parts("1:2 7:10"), parts)
    eq(B.encode_parts({}), "")
    eq(B.decode_parts(""), {})
    eq(B.decode_parts(nil), {})
    eq(B.decode_parts(false), {}, "a missing field (false from Redis)")
    eq(math.type(B.decode_parts("3:4")[1].units), "integer")
end)

test("MAX bounds the buckets an item may have", function()
    eq(B.MAX, 64)
end)
