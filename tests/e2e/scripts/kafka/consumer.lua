-- The test consumer: persists each message once (idempotent insert keyed by the message value) and fails on
-- purpose for two kinds of values:
--   "fail3-..."  fails the first 3 times it is seen, then succeeds (retry without loss or reordering)
--   "poison-..." always fails (ends in the dead-letter topic)
-- The sink is MySQL when SK_KAFKA_SINK=mysql (table kafka_rows), else a file (SK_KAFKA_SINK_FILE), one line per
-- successful insert: value, partition, offset.
local sink = require "sink"

local attempts = {}

return function(batch)
    for _, m in ipairs(batch) do
        local v = m.value or ""
        if v:sub(1, 6) == "fail3-" then
            attempts[v] = (attempts[v] or 0) + 1
            if attempts[v] <= 3 then
                return nil, "induced failure " .. attempts[v] .. " for " .. v
            end
        elseif v:sub(1, 7) == "poison-" then
            error("poison message " .. v)
        end
        local ok, err = sink.insert(m)
        if not ok then
            return nil, err
        end
    end
    local delay = tonumber(os.getenv("SK_KAFKA_BATCH_DELAY_MS") or "")
    if delay then
        sleep(delay) -- widens the window in which a kill -9 lands mid-batch
    end
    return true
end
