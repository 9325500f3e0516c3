-- tests/unit/scripts/sale/coalesce.lua: per-worker coalescing (scripts/sale/coalesce.lua): callers of one key wait
-- for the batch in flight, the first of them leads the next one for up to batch_max, a wait that times out answers
-- busy, and a batch whose run raises fails each of its callers. Callers are coroutines; the semaphores they park on
-- are stand-ins driven by the test, as the worker's loop would drive the real ones.
local errors = {}
log = { error = function(msg) errors[#errors + 1] = msg end }

local parked = {} -- semaphore -> the coroutine waiting on it
semaphore = { new = function(n)
    local s = { n = n }
    function s:wait()
        if self.n > 0 then
            self.n = self.n - 1
            return true
        end
        parked[self] = coroutine.running()
        return coroutine.yield("parked")
    end
    function s:post()
        local co = parked[self]
        if co then
            parked[self] = nil
            assert(coroutine.resume(co, true))
        else
            self.n = self.n + 1
        end
    end
    return s
end }

local coalesce = require "sale.coalesce"

-- a run that records each batch and stays in flight until released (the leader's coroutine yields in it)
local function recorder()
    local r = { batches = {}, release = {} }
    function r.run(key, entries)
        local names = {}
        for i, e in ipairs(entries) do
            names[i] = e.name
        end
        r.batches[#r.batches + 1] = key .. ":" .. table.concat(names, ",")
        coroutine.yield("in flight")
        if r.raise then
            error("the take failed", 0)
        end
        for _, e in ipairs(entries) do
            e.took = "taken for " .. e.name
        end
    end
    return r
end

-- a caller: submits its entry in a coroutine of its own; `out` gets what submit returned
local function caller(c, key, name)
    local e = { name = name }
    local out = {}
    local co = coroutine.create(function()
        out.ok, out.err = c:submit(key, e)
        out.done = true
    end)
    assert(coroutine.resume(co))
    return e, out, co
end

local function finish(co) -- the run of the batch this coroutine leads returns
    assert(coroutine.resume(co))
end

test("the first caller leads at once; those behind it are served together by the next batch", function()
    local r = recorder()
    local c = coalesce.new(r.run, { batch_max = 256, wait_ms = 3000 })
    local a, a_out, a_co = caller(c, "item", "a")
    local b, b_out, b_co = caller(c, "item", "b")
    local d, d_out = caller(c, "item", "d")
    eq(r.batches, { "item:a" }, "b and d wait for a's batch")
    finish(a_co)
    eq(a_out, { ok = true, done = true })
    eq(r.batches, { "item:a", "item:b,d" }, "b leads the next batch, and d is in it")
    eq({ b_out.done, d_out.done }, {}, "b's batch is in flight")
    finish(b_co)
    eq(b_out, { ok = true, done = true })
    eq(d_out, { ok = true, done = true })
    eq({ a.took, b.took, d.took }, { "taken for a", "taken for b", "taken for d" })
    eq(next(c.lanes), nil, "no lane is left behind")
end)

test("batch_max bounds a batch; the lane is freed when nobody waits", function()
    local r = recorder()
    local c = coalesce.new(r.run, { batch_max = 2, wait_ms = 3000 })
    local cos = {}
    local outs = {}
    for i, name in ipairs { "a", "b", "d", "e" } do
        local _, out, co = caller(c, "k", name)
        cos[i], outs[i] = co, out
    end
    eq(r.batches, { "k:a" })
    finish(cos[1]) -- a's batch ends: b leads b and d
    eq(r.batches, { "k:a", "k:b,d" })
    finish(cos[2]) -- b's batch ends: e leads alone
    eq(r.batches, { "k:a", "k:b,d", "k:e" })
    eq(outs[2], { ok = true, done = true })
    eq(outs[3], { ok = true, done = true }, "d was served by b's batch")
    eq(outs[4].done, nil, "e's batch is in flight")
    finish(cos[4])
    eq(outs[4], { ok = true, done = true })
    eq(next(c.lanes), nil, "no lane is left behind")
end)

test("a batch whose run raises fails every caller in it, logged once", function()
    errors = {}
    local r = recorder()
    r.raise = true
    local c = coalesce.new(r.run)
    local _, a_out, a = caller(c, "z", "a")
    finish(a)
    eq(a_out, { err = "the take failed", done = true })
    eq(#errors, 1)
    eq(errors[1]:find("the take failed", 1, true) ~= nil, true, errors[1])
    eq(next(c.lanes), nil)
end)

test("a caller whose wait times out before a batch took it answers busy and leaves the lane", function()
    local r = recorder()
    local c = coalesce.new(r.run, { wait_ms = 10 })
    local _, _, a = caller(c, "t", "a")
    local _, b_out = caller(c, "t", "b")
    local b_sema, b_co = next(parked)
    parked[b_sema] = nil
    assert(coroutine.resume(b_co, false)) -- its wait timed out
    eq(b_out, { err = "busy", done = true })
    eq(#c.lanes.t, 0, "b left the lane")
    finish(a)
    eq(r.batches, { "t:a" }, "no batch for b")
    eq(next(c.lanes), nil)
end)
