-- Routes exercising the core: params, JSON, errors, yields.
local helpers = require "helpers"

app.route("GET", "/hello/{name}", function(req)
    return 200, { hello = req.params.name, query = req.query, answer = helpers.answer }
end)

app.route("GET", "/items/{item}/users/{user}", function(req)
    return 200, { item = req.params.item, user = req.params.user }
end)

app.route("POST", "/echo", function(req)
    local body, err = req:json()
    if body == nil then
        return 400, { ok = false, error = "bad_request", message = err }
    end
    return 200, { got = body, content_type = req.headers["content-type"] }
end)

app.route("GET", "/sleep", function(req)
    local ms = tonumber(req.query.ms) or 100
    sleep(ms)
    if req.query.tag then
        log.info("finished sleeping for " .. req.query.tag)
    end
    return 200, { slept = ms }
end)

-- n handlers meet: each sleeps 10 ms at a time until n of them are asleep at once (or 60 s pass), so all n
-- answering met = true proves that sleep yields and the n overlapped on the worker's loop
local meeting = 0
app.route("GET", "/meet", function(req)
    local n, waited = tonumber(req.query.n) or 2, 0
    meeting = meeting + 1
    local met = meeting >= n
    while not met and waited < 60000 do
        sleep(10)
        waited = waited + 10
        met = meeting >= n
    end
    return 200, { met = met }
end)

app.route("GET", "/peer", function(req)
    return 200, { peer = req.peer }
end)

app.route("GET", "/boom", function(req)
    local t = nil
    return 200, { value = t.field } -- indexing nil raises
end)

app.route("GET", "/text", function(req)
    return 201, "plain words", { ["Content-Type"] = "text/plain", ["X-Answer"] = 42 }
end)

app.route("GET", "/bad-return", function(req)
    return "not a status"
end)

-- runs once per process start (never on reload), in a coroutine, so it may yield
app.init(function()
    sleep(10)
    shared.incr("core:init_runs", 1, 0)
end)

app.route("GET", "/init-runs", function(req)
    return 200, { runs = shared.get("core:init_runs") }
end)

app.route("GET", "/uuids", function(req)
    local out = {}
    for i = 1, tonumber(req.query.n or "10") do
        out[i] = uuid()
    end
    return 200, out
end)

-- sleeps, then counts in the shared store: with a short http.deadline_ms the answer is the core's 503, and the
-- count shows the handler still ran to its end
app.route("GET", "/slow-incr/{k}", function(req)
    sleep(tonumber(req.query.ms) or 100)
    shared.incr(req.params.k, 1, 0)
    return 200, { done = true }
end)

app.route("GET", "/shared/{k}", function(req)
    return 200, { value = shared.get(req.params.k) }
end)
