-- wrk script: POST /queue/join {"item_id","user_id"} with a distinct user per request, counting answers by status.
-- ITEM names the item (it has a waiting room); RUN makes user ids unique across runs.
-- USERS (optional): join exactly this many distinct users in all (each of the THREADS threads takes its share, then
-- asks GET /time until every join of its share is answered, and stops). Without it every request is a new user
-- until wrk's -d ends.
-- TICKETS (optional): a file name prefix; each thread writes the ticket of each 200 answer, a line each, to
-- TICKETS.<thread>.
local item = os.getenv("ITEM") or "bench"
local run = os.getenv("RUN") or "r"
local function env(name) -- nil when unset or empty
    local v = os.getenv(name)
    return v ~= "" and v or nil
end
local users = tonumber(env("USERS") or "")
local threads_n = tonumber(env("THREADS") or "2")
local tickets = env("TICKETS")
local done_at = env("DONE")
local threads = {}
local next_id = 0

function setup(thread)
    next_id = next_id + 1
    thread:set("tid", next_id)
    table.insert(threads, thread)
end

local share, out, verified
local n, answers = 0, 0
local counts = {}
local headers = { ["Content-Type"] = "application/json" }

function init()
    if users then
        -- thread t of T joins floor((USERS - t) / T) + 1 users: the shares add up to USERS
        share = math.floor((users - tid) / threads_n) + 1
    end
    if tickets then
        out = assert(io.open(string.format("%s.%d", tickets, tid), "w"))
    end
    -- wrk calls the first thread's request() once more, before it connects, only to check what it returns
    -- (script_verify_request in wrk.c): that request is never sent, so it must not use up a user
    verified = tid ~= 1
end

function request()
    if not verified then
        verified = true
        return wrk.format("GET", "/time")
    end
    n = n + 1
    if share and n > share then
        -- every user of the share is sent; until their answers are in, the connections ask the time (a filler that
        -- joins nobody and that response() tells apart by its body)
        return wrk.format("GET", "/time")
    end
    return wrk.format("POST", "/queue/join", headers,
        string.format('{"item_id":"%s","user_id":"%s-%d-%d"}', item, run, tid, n))
end

function response(status, _, body)
    if share and status == 200 and body:find('"now":', 1, true) then
        return
    end
    answers = answers + 1
    counts[status] = (counts[status] or 0) + 1
    c200 = counts[200] or 0
    cother = answers - c200
    if out and status == 200 then
        local ticket = body:match('"ticket":%s*"([^"]+)"')
        if ticket then
            out:write(ticket, "\n")
        end
    end
    if share and answers == share then
        if out then
            out:close()
            out = nil
        end
        if done_at then
            assert(io.open(string.format("%s.%d", done_at, tid), "w")):close()
        end
        wrk.thread:stop()
    end
end

function done()
    local ok, other = 0, 0
    for _, t in ipairs(threads) do
        ok = ok + (t:get("c200") or 0)
        other = other + (t:get("cother") or 0)
    end
    io.write(string.format("COUNTS %d %d\n", ok, other))
end
