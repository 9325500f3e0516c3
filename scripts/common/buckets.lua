-- common/buckets.lua: a hot item's stock spread over K keys ("buckets"), each under a hash tag of its own, so the K
-- masters of a Redis Cluster share one item's load (PUT /admin/items/{id} {"buckets": K}; K = 1 is the plain layout).
--
-- Bucket b of item i is tagged i (b = 0: the item's own keys, so K = 1 changes nothing) or "i#b" (b ≥ 1; "#" is not
-- an id character, so no item's tag is another's bucket). Each bucket has the keys of an item of its own: stock,
-- sold, queued (its orders), a meta holding what the decision needs (limit, window, rebuilding), and users — the
-- counts of the users that hash to it (bucket_of_user: CRC16 of the user id, mod K). A user always buys in their
-- bucket, and an order's id carries that bucket's slot token, so the order, its user's count and the bucket's stock
-- are one slot and the plain take decides (per-user limit exact across buckets: a user's count lives in one place).
-- When the user's bucket has fewer units than asked, the rest comes from the other buckets as *parts*
-- (redis/take_part.lua: each part a record in its own bucket), and the order is recorded in the user's bucket with
-- the list of its parts (redis/take_final.lua). A compensation gives every part back; a part whose order never got
-- recorded (a crash between) is given back by the sweeper. A buyer is refused sold_out only when a whole pass over
-- the buckets found too little. The home bucket's meta (b = 0) is the item's: stock_initial of the whole item,
-- admission settings (where "buckets" is kept: common/items.lua reads and caches it).
local M = {}

M.MAX = 64 -- a Redis Cluster has rarely more masters than that; each bucket costs a round trip on a sold-out pass

function M.tag(item, b)
    if b == 0 then
        return item
    end
    return item .. "#" .. b
end

-- the item a bucket's tag belongs to
function M.item_of(tag)
    return tag:match("^(.-)#%d+$") or tag
end

function M.of_user(user, k)
    if k <= 1 then
        return 0
    end
    return redis.slot(user) % k
end

-- the stock of each bucket (index 0..k-1): as even as can be, the first ones one more
function M.shares(stock, k)
    local out, base, extra = {}, stock // k, stock % k
    for b = 0, k - 1 do
        out[b] = base + (b < extra and 1 or 0)
    end
    return out
end

-- "b:n b:n" (an order's parts as its hash keeps them) → { { b = b, units = n }, ... }
function M.decode_parts(s)
    local out = {}
    for b, n in tostring(s or ""):gmatch("(%d+):(%d+)") do
        out[#out + 1] = { b = math.tointeger(tonumber(b)), units = math.tointeger(tonumber(n)) }
    end
    return out
end

function M.encode_parts(parts)
    local out = {}
    for i, p in ipairs(parts) do
        out[i] = p.b .. ":" .. p.units
    end
    return table.concat(out, " ")
end

return M
