-- books/eviction.lua: Redis's maxmemory-policy checked on every master (books/loss.lua's watch runs a round).
local common = require "common"
local books = require "books"
local K = common.keys

local M = {}

-- ===== a maxmemory-policy that may evict the sale's keys =====
-- Only `noeviction` keeps them. Any other policy lets Redis delete keys once it reaches maxmemory: allkeys-* any key
-- (an item's meta, stock, sold, per-user counts: the item would answer as sold out, or let a buyer past the limit,
-- until books/vanished.lua sees it), volatile-* the keys with a TTL, which are the ones the books cannot rebuild
-- (order hashes, the tombstones that keep a late message from being persisted, Idempotency-Key records). Checked at
-- start-up and every EVICTION_EVERY_MS on every master; reported in /healthz ("redis_eviction": "ok" | "unsafe",
-- with "redis_eviction_error" saying which policy where), as the seckilld_redis_eviction_policy_unsafe gauge (0/1)
-- and in the log (an error when it turns unsafe, then a warning every 5 minutes while it stays so).
local EVICTION_EVERY_MS = 10000
local eviction = { next = 0, unsafe = nil }

local function eviction_round()
    if now() < eviction.next then
        return
    end
    local nodes = redis.cluster and redis.masters() or { false }
    if #nodes == 0 then
        return -- no slot map yet: asked again next round
    end
    local bad = {}
    for _, t in ipairs(nodes) do
        local info
        if t then
            info = redis.call_at(K.epoch_at(t), "INFO")
        else
            info = redis.call("INFO")
        end
        if type(info) ~= "string" then
            return -- Redis down: asked again next round
        end
        local policy = info:match("maxmemory_policy:([%w_-]+)")
        if policy ~= "noeviction" then
            bad[#bad + 1] = string.format("%s%s (port %s, maxmemory %s)", t and "master {" .. t .. "}: " or "",
                policy or "unknown", info:match("tcp_port:(%d+)") or "?", info:match("maxmemory:(%d+)") or "?")
        end
    end
    eviction.next = now() + EVICTION_EVERY_MS
    local unsafe = #bad > 0
    metrics.gauge("seckilld_redis_eviction_policy_unsafe", unsafe and 1 or 0)
    if not unsafe then
        health.note("redis_eviction", "ok")
        if eviction.unsafe then
            log.info("redis: maxmemory-policy is noeviction again: the sale's keys cannot be evicted")
        end
        eviction.unsafe = false
        return
    end
    local message = "redis maxmemory-policy " .. table.concat(bad, "; ") .. ": Redis may evict the sale's keys; a "
        .. "sale needs noeviction (README: Reliability)"
    health.note("redis_eviction", "unsafe", message)
    if not eviction.unsafe then
        log.error(message)
        shared.set("books:warned:eviction", true, 300000)
    else
        books.warn_every("eviction", 300000, message)
    end
    eviction.unsafe = true
end
M.round = eviction_round

return M
