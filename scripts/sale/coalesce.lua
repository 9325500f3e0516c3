-- sale/coalesce.lua: callers that need the same work done wait for each other and are served in batches.
--
--   local c = coalesce.new(run, { batch_max = 256, wait_ms = 3000 })
--   local ok, err = c:submit(key, entry)
--
-- While a batch for `key` is in flight, later callers queue (FIFO, on this worker); when it ends, the first of them
-- leads the next batch: `run(key, entries)` is called once for up to batch_max queued entries (the leader first),
-- does the work for all of them and leaves each one's outcome in its entry. submit returns true once a batch
-- containing the entry has run; nil, "busy" if it waited wait_ms without being taken into a batch; nil, msg for
-- every entry of a batch whose run raised (logged once). A lane exists only while its key has a batch in flight,
-- so keys that come and go (e.g. random item ids) leave nothing behind.
--
-- State is per worker VM (a module-level table), like the semaphores it parks on.
local M = {}
M.__index = M

function M.new(run, opts)
    opts = opts or {}
    return setmetatable({
        run = run,
        batch_max = math.tointeger(opts.batch_max) or 256,
        wait_ms = math.tointeger(opts.wait_ms) or 3000,
        lanes = {}, -- key -> FIFO of waiting entries, while a batch for key is in flight
    }, M)
end

local function remove(list, x)
    for i, e in ipairs(list) do
        if e == x then
            return table.remove(list, i)
        end
    end
end

-- leads one batch: `me` first, then up to batch_max - 1 waiting entries; hands the lane on or frees it
function M:_lead(key, lane, me)
    local batch = { me }
    while #batch < self.batch_max and #lane > 0 do
        local e = table.remove(lane, 1)
        e._claimed = true
        batch[#batch + 1] = e
    end
    local ok, err = pcall(self.run, key, batch)
    if not ok then
        err = tostring(err)
        log.error("coalesced batch for " .. tostring(key) .. " failed: " .. err)
    end
    for i, e in ipairs(batch) do
        e._err = not ok and err or nil
        if i > 1 then
            e._sema:post()
        end
    end
    if #lane > 0 then
        local nxt = table.remove(lane, 1)
        nxt._lead = true
        nxt._sema:post()
    else
        self.lanes[key] = nil
    end
    if not ok then
        return nil, err
    end
    return true
end

function M:submit(key, entry)
    local lane = self.lanes[key]
    if lane == nil then
        lane = {}
        self.lanes[key] = lane
        return self:_lead(key, lane, entry)
    end
    entry._sema = semaphore.new(0)
    lane[#lane + 1] = entry
    local woke = entry._sema:wait(self.wait_ms)
    if not entry._lead and not entry._claimed then
        if not woke then
            remove(lane, entry)
            return nil, "busy"
        end
    elseif entry._claimed and not woke then
        entry._sema:wait() -- our batch is in flight: its outcome is on the way
    end
    if entry._claimed then
        if entry._err then
            return nil, entry._err
        end
        return true
    end
    return self:_lead(key, lane, entry) -- handed the lane by the previous leader
end

return M
