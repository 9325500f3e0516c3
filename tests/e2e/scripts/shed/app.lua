-- Load shedding: a buy that holds its request until the test releases it (POST /admin/release), and a count of how
-- many ran at once. Holding on a release instead of a fixed sleep lets the test order events (every shed answer
-- arrives while the admitted buys are still held) instead of timing them. A buy never released answers after
-- HOLD_CAP_MS anyway, so a test that dies early leaves nothing hanging.
local running, peak, released = 0, 0, false
local HOLD_CAP_MS = 120000

app.route("POST", "/seckill/add", function(req)
    running = running + 1
    peak = math.max(peak, running)
    local held = 0
    while not released and held < HOLD_CAP_MS do
        sleep(10)
        held = held + 10
    end
    running = running - 1
    return 200, { ok = true, released = released }
end)

app.route("GET", "/peak", function(req)
    return 200, { peak = peak, running = running }
end)

-- the operator's routes are never shed (the option, not the path, says so: /admin/ is the application's word)
app.route("GET", "/admin/ping", function(req)
    return 200, { ok = true, running = running }
end, { shed = false })

app.route("POST", "/admin/release", function(req)
    released = true
    return 200, { ok = true, running = running }
end, { shed = false })
