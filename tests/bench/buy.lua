-- wrk script: POST /seckill/add with a distinct user per request, counting answers by status.
-- ITEM names the item; RUN makes user ids unique across runs; IDEMPOTENT=1 sends an Idempotency-Key with each buy.
local threads = {}
local item = os.getenv("ITEM") or "bench"
local run = os.getenv("RUN") or "r"
local next_id = 0

function setup(thread)
    next_id = next_id + 1
    thread:set("tid", next_id)
    table.insert(threads, thread)
end

local n = 0
local counts = {}
local headers = { ["Content-Type"] = "application/json" }
local idempotent = os.getenv("IDEMPOTENT") == "1"

function request()
    n = n + 1
    local body = string.format('{"item_id":"%s","user_id":"%s-%d-%d"}', item, run, tid, n)
    if idempotent then
        headers["Idempotency-Key"] = string.format("k%d", n)
    end
    return wrk.format("POST", "/seckill/add", headers, body)
end

function response(status)
    counts[status] = (counts[status] or 0) + 1
    c200 = counts[200] or 0
    c409 = counts[409] or 0
    cother = n - c200 - c409
end

function done(summary, latency, requests)
    local ok, sold_out = 0, 0
    for _, t in ipairs(threads) do
        ok = ok + (t:get("c200") or 0)
        sold_out = sold_out + (t:get("c409") or 0)
    end
    io.write(string.format("COUNTS %d %d %d\n", ok, sold_out, summary.requests - ok - sold_out))
end
