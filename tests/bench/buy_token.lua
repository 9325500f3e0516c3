-- wrk script: POST /seckill/add with a purchase token, a distinct user per request. TOKENS names a file of
-- "user token" lines (minted by tests/bench/admission.sh for ITEM); each wrk thread takes every THREADS-th line.
local item = os.getenv("ITEM") or "bench"
local file = os.getenv("TOKENS")
local threads_n = tonumber(os.getenv("THREADS") or "2")
local next_id = 0
local all = {}

function setup(thread)
    next_id = next_id + 1
    thread:set("tid", next_id)
    table.insert(all, thread)
end

local users, tokens, i = {}, {}, 0
local headers = { ["Content-Type"] = "application/json" }

function init()
    local n = 0
    for line in io.lines(file) do
        n = n + 1
        if n % threads_n == tid - 1 then
            local u, t = line:match("^(%S+) (%S+)$")
            users[#users + 1], tokens[#tokens + 1] = u, t
        end
    end
end

function request()
    i = i % #users + 1
    return wrk.format("POST", "/seckill/add", headers,
        string.format('{"item_id":"%s","user_id":"%s","token":"%s"}', item, users[i], tokens[i]))
end

local counts = {}
function response(status)
    counts[status] = (counts[status] or 0) + 1
    c200 = counts[200] or 0
    cother = i - c200
end

function done(summary)
    local ok = 0
    for _, t in ipairs(all) do
        ok = ok + (t:get("c200") or 0)
    end
    io.write(string.format("COUNTS %d %d\n", ok, summary.requests - ok))
end
