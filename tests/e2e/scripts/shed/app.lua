-- Load shedding: a buy that holds its request for 1.5 s, and a count of how many ran at once.
local running, peak = 0, 0

app.route("POST", "/seckill/add", function(req)
    running = running + 1
    peak = math.max(peak, running)
    sleep(1500)
    running = running - 1
    return 200, { ok = true }
end)

app.route("GET", "/peak", function(req)
    return 200, { peak = peak, running = running }
end)

-- the operator's routes are never shed
app.route("GET", "/admin/ping", function(req)
    return 200, { ok = true, running = running }
end)
