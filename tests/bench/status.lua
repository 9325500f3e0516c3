-- wrk script: GET /queue/status?ticket=T cycling over the tickets of users who joined (tests/bench/queue.sh writes
-- them with join.lua). TICKETS names a file of tickets, one a line; each of the THREADS wrk threads takes every
-- THREADS-th line. No response() on purpose: wrk then neither keeps nor hands over the bodies, so on a machine it
-- shares with the server it takes no more CPU per answer than for the baselines without a script; queue.sh counts
-- the answers by state from the server's seckilld_queue_polls_total instead.
local file = os.getenv("TICKETS")
local threads_n = tonumber(os.getenv("THREADS") or "2")
local next_id = 0

function setup(thread)
    next_id = next_id + 1
    thread:set("tid", next_id)
end

local requests, i = {}, 0

local function escape(s)
    return (s:gsub("[^%w%-._~]", function(c) return string.format("%%%02X", c:byte()) end))
end

function init()
    local n = 0
    for line in io.lines(file) do
        n = n + 1
        if n % threads_n == tid - 1 and line ~= "" then
            -- formatted once here: request() only picks one
            requests[#requests + 1] = wrk.format("GET", "/queue/status?ticket=" .. escape(line))
        end
    end
    assert(#requests > 0, "no tickets in " .. tostring(file))
end

function request()
    i = i % #requests + 1
    return requests[i]
end
