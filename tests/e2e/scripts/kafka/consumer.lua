-- The test consumer: persists each message once (idempotent insert keyed by the message value) and fails on
-- purpose for some kinds of values:
--   "fail3-..."  returns nil, err the first 3 times it is seen, then succeeds (transient: the same batch is retried)
--   "flaky-..."  returns nil, err while the file SK_KAFKA_DOWN_FILE exists (a backend outage of any length)
--   "perm-..."   returns false, err (permanent: dead-lettered at once, without retries)
--   "poison-..." raises (dead-lettered after kafka.max_failures), unless the file SK_KAFKA_FIXED_FILE exists (the bug
--                was fixed: a redriven dead letter then succeeds)
-- The sink is MySQL when SK_KAFKA_SINK=mysql (table kafka_rows), else a file (SK_KAFKA_SINK_FILE), one line per
-- successful insert: value, partition, offset.
local sink = require "sink"

local attempts = {}

local function exists(path)
    local f = path and io.open(path, "r")
    if f then
        f:close()
        return true
    end
    return false
end

return function(batch)
    for _, m in ipairs(batch) do
        local v = m.value or ""
        if v:sub(1, 6) == "fail3-" then
            attempts[v] = (attempts[v] or 0) + 1
            if attempts[v] <= 3 then
                return nil, "induced failure " .. attempts[v] .. " for " .. v
            end
        elseif v:sub(1, 6) == "flaky-" and exists(os.getenv("SK_KAFKA_DOWN_FILE")) then
            log.info("flaky batch of " .. #batch .. " offsets " .. batch[1].partition .. ":" .. batch[1].offset .. "-"
                .. batch[#batch].partition .. ":" .. batch[#batch].offset)
            return nil, "backend down (test) at " .. v
        elseif v:sub(1, 5) == "perm-" then
            log.info("rejecting " .. v .. " in a batch of " .. #batch)
            return false, "invalid order " .. v
        elseif v:sub(1, 7) == "poison-" and not exists(os.getenv("SK_KAFKA_FIXED_FILE")) then
            error("poison message " .. v)
        end
        local ok, err = sink.insert(m)
        if not ok then
            return nil, err
        end
        if m.headers and m.headers["redriven-from"] then
            log.info("processed redriven " .. v .. " from " .. m.headers["redriven-from"])
        end
    end
    local delay = tonumber(os.getenv("SK_KAFKA_BATCH_DELAY_MS") or "")
    if delay then
        sleep(delay) -- widens the window in which a kill -9 lands mid-batch
    end
    return true
end
