-- wrk script: GET /queue/status?ticket=T cycling over the tickets of users who joined (tests/bench/queue.sh writes
-- them with join.lua), counting answers by state. TICKETS names a file of tickets, one a line; each of the THREADS
-- wrk threads takes every THREADS-th line. Answers that carry a newer ticket (the server reissues a pre-start ticket
-- after the draw) are counted as reissued; the script keeps polling with the tickets it read.
local file = os.getenv("TICKETS")
local threads_n = tonumber(os.getenv("THREADS") or "2")
local threads = {}
local next_id = 0

function setup(thread)
    next_id = next_id + 1
    thread:set("tid", next_id)
    table.insert(threads, thread)
end

local paths, i = {}, 0
local counts = { waiting = 0, admitted = 0, reissued = 0, other = 0 }

local function escape(s)
    return (s:gsub("[^%w%-._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

function init()
    local n = 0
    for line in io.lines(file) do
        n = n + 1
        if n % threads_n == tid - 1 and line ~= "" then
            paths[#paths + 1] = "/queue/status?ticket=" .. escape(line)
        end
    end
    assert(#paths > 0, "no tickets in " .. tostring(file))
end

function request()
    i = i % #paths + 1
    return wrk.format("GET", paths[i])
end

function response(status, _, body)
    local state = status == 200 and body:match('"state":%s*"(%a+)"')
    if state == "waiting" or state == "admitted" then
        counts[state] = counts[state] + 1
    else
        counts.other = counts.other + 1
    end
    local ticket = status == 200 and body:match('"ticket":%s*"([^"]+)"')
    if ticket then
        counts.reissued = counts.reissued + 1
    end
    c_waiting, c_admitted, c_reissued, c_other = counts.waiting, counts.admitted, counts.reissued, counts.other
end

function done(summary)
    local w, a, r, o = 0, 0, 0, 0
    for _, t in ipairs(threads) do
        w = w + (t:get("c_waiting") or 0)
        a = a + (t:get("c_admitted") or 0)
        r = r + (t:get("c_reissued") or 0)
        o = o + (t:get("c_other") or 0)
    end
    io.write(string.format("STATES %d %d %d %d\n", w, a, r, o))
end
