-- books/vanished.lua: items MySQL knows whose keys are gone from Redis while its epoch stayed, found and paused for
-- a rebuild (books/loss.lua's watch runs a round; GET /admin/items/{id} and the start-up's items ask for one item).
local common = require "common"
local books = require "books"
local B = require "common.buckets"
local mark = require "books.mark"
local K = common.keys

local M = {}

local mark_rows, stamp_marked = mark.rows, mark.stamp

-- ===== items whose keys vanished while the epoch stayed =====
-- The epoch tells that Redis lost its data as a whole; keys can also go one by one (a DEL by hand, an eviction, a
-- partial restore) while MySQL still knows their item. Such an item is not unknown: it is marked and rebuilt by the
-- same machinery as after a loss (the grace, the barrier, stock and per-user counts from MySQL's orders), and
-- answers 503 until then, never 404. Each round (watch_ms) looks at a slice of the items MySQL knows (the list is
-- read again every LIST_EVERY_MS: the KNOWN_MAX most recently set up, also written to the shared store as the
-- process's list of known items: common.known_item), one pipeline per slot (one in all on a single Redis); per stock
-- bucket: the meta's armed_at and rebuilding flag, and whether stock and sold exist; an item set up less than
-- SETTLE_MS ago is left for later rounds (its set-up may still be under way). An item is vanished when
--   its meta is gone: marked as after a flush (only if its meta is still missing: a set-up since wins), or
--   its meta is there, not rebuilding and of the set-up MySQL has (the same armed_at), and a bucket's meta, its
--   stock or its sold is gone: marked in full, only if the meta is still of that set-up (redis/rebuild_mark.lua's
--   mode "2").
-- A take that finds a known item without meta asks for a look at it in the next round (common.ask_rebuild). The
-- marking needs no lock: it only pauses items (a rebuild round takes the items to rebuild when it starts; one marked
-- later is rebuilt by the next round), and the epoch is not touched.
local KNOWN_MAX = 4096
local LIST_EVERY_MS = 10000
local SLICE = 128 -- items looked at per round: 4,096 items every ~16 s at watch_ms = 500
-- a set-up writes MySQL's row first and the home bucket's meta last (common.setup_item): an item set up less than this
-- long ago (by its row's armed_at, any process's clock) may be half-way through, so it is not looked at yet
local SETTLE_MS = 10000
local ITEM_ROW = "SELECT item_id, stock_initial, limit_per_user, starts_at, ends_at, armed_at, admission FROM items "

local vanish = { rows = {}, listed_at = nil, pos = 1 }
metrics.add("seckilld_books_vanished_items_total", 0)

local function admission_of(r)
    return r.admission ~= mysql.null and r.admission or nil
end

-- the rows (needing item_id, armed_at, admission) whose item vanished from Redis, each { row =, mode = "1"|"2" },
-- or nil and why. An item whose replies are errors (a slot in migration) is left for a later round.
local function vanished_of(rows)
    local tags, settled = {}, math.floor(now()) - SETTLE_MS
    for _, r in ipairs(rows) do
        for b = 0, (r.armed_at or 0) <= settled and common.buckets_in(admission_of(r)) - 1 or -1 do
            tags[#tags + 1] = { row = r, b = b, tag = B.tag(r.item_id, b) }
        end
    end
    local state = {} -- item -> { gone =, broken =, skip = }
    for _, group in ipairs(common.by_slot(tags, function(t) return K.meta(t.tag) end)) do
        local res, err = redis.pipeline(function(p)
            for _, t in ipairs(group) do
                p:call("HMGET", K.meta(t.tag), "armed_at", "rebuilding")
                p:call("EXISTS", K.stock(t.tag))
                p:call("EXISTS", K.sold(t.tag))
            end
        end)
        if res == nil then
            return nil, "redis: " .. tostring(err)
        end
        for i, t in ipairs(group) do
            local st = state[t.row.item_id] or {}
            state[t.row.item_id] = st
            local m, stock, sold = res[3 * i - 2][1], res[3 * i - 1][1], res[3 * i][1]
            if type(m) ~= "table" or type(stock) ~= "number" or type(sold) ~= "number" then
                st.skip = true
            elseif t.b == 0 and not m[1] then
                st.gone = true
            elseif m[2] then
                st.skip = true -- being rebuilt (or its buckets being reopened)
            elseif t.b == 0 and common.int_or_nil(m[1]) ~= math.tointeger(t.row.armed_at) then
                st.skip = true -- set up again since the row was read
            elseif not m[1] or stock == 0 or sold == 0 then
                st.broken = true
            end
        end
    end
    local out = {}
    for _, r in ipairs(rows) do
        local st = state[r.item_id]
        if st and (st.gone or (st.broken and not st.skip)) then
            out[#out + 1] = { row = r, mode = st.gone and "1" or "2" }
        end
    end
    return out
end

-- looks at the items `ids` afresh (their rows read from MySQL now) and marks those that vanished from Redis; returns
-- how many were marked and the ids MySQL knows ({id = true}), or nil and why. The start-up's items, GET
-- /admin/items/{id} and the watcher use it.
function M.repair(ids)
    local rows = {}
    for i = 1, #ids, 200 do
        local chunk, marks = {}, {}
        for j = i, math.min(i + 199, #ids) do
            chunk[#chunk + 1], marks[#marks + 1] = ids[j], "?"
        end
        local r, err = mysql.query(ITEM_ROW .. "WHERE item_id IN (" .. table.concat(marks, ", ") .. ")",
            table.unpack(chunk))
        if r == nil then
            return nil, "mysql: " .. tostring(err)
        end
        table.move(r, 1, #r, #rows + 1, rows)
    end
    local known = {}
    for _, r in ipairs(rows) do
        known[r.item_id] = true
        shared.set(common.known_key(r.item_id), true, common.KNOWN_TTL_MS)
    end
    local found, err = vanished_of(rows)
    if found == nil then
        return nil, err
    end
    local by_mode, names, marked = { ["1"] = {}, ["2"] = {} }, {}, 0
    for _, v in ipairs(found) do
        table.insert(by_mode[v.mode], v.row)
        names[#names + 1] = v.row.item_id
    end
    for _, mode in ipairs { "1", "2" } do
        local n, merr = mark_rows(by_mode[mode], mode)
        if n == nil then
            return nil, merr
        end
        marked = marked + n
    end
    local ok, serr = stamp_marked(marked)
    if ok == nil then
        return nil, serr
    end
    if marked > 0 then
        log.warn("item(s) " .. table.concat(names, ", ", 1, math.min(#names, 20)) .. (#names > 20 and ", ..." or "")
            .. " known to MySQL but gone from Redis (a key deleted, evicted or not restored; the epoch is intact): "
            .. marked .. " item(s) paused (503) until rebuilt from MySQL")
        metrics.add("seckilld_books_vanished_items_total", marked)
    end
    return marked, known
end

-- one round's look for vanished items (the epoch intact)
local function vanished_round()
    local t = now()
    if vanish.listed_at == nil or t - vanish.listed_at >= LIST_EVERY_MS then
        vanish.listed_at = t
        local rows = mysql.query("SELECT item_id, armed_at, admission FROM items ORDER BY armed_at DESC LIMIT "
            .. KNOWN_MAX)
        if rows ~= nil then -- MySQL down: the last list stays, and stays known
            vanish.rows, vanish.pos = rows, 1
        end
        for _, r in ipairs(vanish.rows) do
            shared.set(common.known_key(r.item_id), true, common.KNOWN_TTL_MS)
        end
    end
    local ids = {}
    local asked = shared.get(common.VANISHED_ASKED)
    if asked ~= nil then
        shared.delete(common.VANISHED_ASKED)
        ids[1] = asked
    end
    local rows, slice = vanish.rows, {}
    table.move(rows, vanish.pos, math.min(vanish.pos + SLICE - 1, #rows), 1, slice)
    vanish.pos = vanish.pos + SLICE > #rows and 1 or vanish.pos + SLICE
    local found, err = vanished_of(slice)
    if found == nil then
        return books.warn_every("vanished", 5000, "redis: items not compared with MySQL this round: " .. tostring(err))
    end
    for _, v in ipairs(found) do
        ids[#ids + 1] = v.row.item_id
    end
    if #ids > 0 then
        local marked, merr = M.repair(ids) -- read afresh: the list may be 10 s old
        if marked == nil then
            books.warn_every("vanished", 5000, "items gone from Redis not paused yet: " .. tostring(merr))
        end
    end
end
M.round = vanished_round

return M
