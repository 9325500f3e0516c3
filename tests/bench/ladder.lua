-- wrk script for tests/bench/ladder.sh: one rung of the ladder per run, every answer's status counted.
--   RUNG     c_hello | healthz | time | unknown | soldout | limited | badtoken | malformed | buy | idem
--   ITEM     the item (not used by healthz, unknown, malformed)
--   RUN      makes user ids (and unknown item ids) unique across runs
--   EXPECT   the status every answer of the rung must have
-- done() prints "LADDER <answers> <expected> <unexpected>" and one "UNEXPECTED <status> <count>" line per other status.
local rung = os.getenv("RUNG") or "healthz"
local item = os.getenv("ITEM") or "bench"
local run = os.getenv("RUN") or "r"
local expect = tonumber(os.getenv("EXPECT") or "200")

local threads = {}
local next_id = 0
function setup(thread)
    next_id = next_id + 1
    thread:set("tid", next_id)
    table.insert(threads, thread)
end

local n = 0
local headers = { ["Content-Type"] = "application/json" }
-- a token of the right shape that the server never signed: expires in an hour, its MAC made up
local forged = string.format("v1.%d.%s", (os.time() + 3600) * 1000, string.rep("0123456789abcdef", 4))

function init()
    math.randomseed(os.time() * 1000 + tid)
end

local function buy_body(user)
    return string.format('{"item_id":"%s","user_id":"%s"}', item, user)
end

local make = {
    healthz = function()
        return wrk.format("GET", "/healthz")
    end,
    -- the C-only twin of a Lua route (SECKILLD_BENCH_ROUTES): h2o and the core's request handling, nothing counted
    c_hello = function()
        return wrk.format("GET", "/_c/hello")
    end,
    -- the cheapest route of the shipped scripts: what entering Lua costs, without the application's work
    time = function()
        return wrk.format("GET", "/time")
    end,
    -- a made-up item id per request: what a bot guessing ids sends
    unknown = function()
        local id = string.format("x%s%d%08x%08x", run, tid, math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
        return wrk.format("POST", "/seckill/add", headers, string.format('{"item_id":"%s","user_id":"u%d-%d"}', id, tid, n))
    end,
    soldout = function()
        return wrk.format("POST", "/seckill/add", headers, buy_body(string.format("%s-%d-%d", run, tid, n)))
    end,
    limited = function()
        return wrk.format("POST", "/seckill/add", headers, buy_body(string.format("%s-%d-%d", run, tid, n)))
    end,
    badtoken = function()
        return wrk.format("POST", "/seckill/add", headers, string.format(
            '{"item_id":"%s","user_id":"%s-%d-%d","token":"%s"}', item, run, tid, n, forged))
    end,
    -- JSON cut short: 400 bad_request before anything else is looked at
    malformed = function()
        return wrk.format("POST", "/seckill/add", headers, string.format('{"item_id":"%s","user_id":', item))
    end,
    buy = function()
        return wrk.format("POST", "/seckill/add", headers, buy_body(string.format("%s-%d-%d", run, tid, n)))
    end,
    idem = function()
        headers["Idempotency-Key"] = string.format("k%s-%d-%d", run, tid, n)
        return wrk.format("POST", "/seckill/add", headers, buy_body(string.format("%s-%d-%d", run, tid, n)))
    end,
}
local make_one = assert(make[rung], "unknown RUNG " .. rung)

function request()
    n = n + 1
    return make_one()
end

counts = {}
function response(status)
    counts[status] = (counts[status] or 0) + 1
end

function done(summary)
    local all = {}
    for _, t in ipairs(threads) do
        for status, c in pairs(t:get("counts") or {}) do
            all[status] = (all[status] or 0) + c
        end
    end
    local total, good = 0, all[expect] or 0
    for _, c in pairs(all) do
        total = total + c
    end
    io.write(string.format("LADDER %d %d %d\n", total, good, total - good))
    for status, c in pairs(all) do
        if status ~= expect then
            io.write(string.format("UNEXPECTED %d %d\n", status, c))
        end
    end
end
