-- Background tasks (app.every), spawn and the Lua memory gauge, for tests/e2e/10_core.py. The tasks themselves live
-- in tasks.lua, which the reload test rewrites.
require "tasks"

-- spawn at load time (no loop, no coroutine yet) is refused
local top_ok, top_err = pcall(spawn, function() end)

-- app.init may spawn too
app.init(function()
    spawn(function(v)
        sleep(5)
        shared.set("tasks:init_spawn", v)
    end, "ran")
end)

app.route("GET", "/shared/{k}", function(req)
    return 200, { value = shared.get(req.params.k) }
end)

app.route("POST", "/shared/{k}", function(req)
    shared.set(req.params.k, true)
    return 200, { ok = true }
end)

app.route("GET", "/top-spawn", function(req)
    return 200, { ok = top_ok, err = tostring(top_err) }
end)

-- the spawned coroutine starts only after this handler has returned: it sees "answered" set. It then runs until
-- POST /shared/{k}:go (or for ms at most), so a test can look at the state while it is still running.
app.route("GET", "/spawn/{k}", function(req)
    local k = req.params.k
    local ok = spawn(function(key, ms)
        shared.set(key .. ":order", shared.get(key .. ":answered") and "after" or "before")
        local waited = 0
        while not shared.get(key .. ":go") and waited < ms do
            sleep(10)
            waited = waited + 10
        end
        shared.set(key, "done")
    end, k, tonumber(req.query.ms) or 100)
    shared.set(k .. ":answered", true)
    return 200, { spawned = ok, value = shared.get(k) }
end)

-- the request object read by a coroutine the handler spawned, after the handler answered and the connection closed:
-- params, query, headers and peer are built on their first read (core/request.c), from a copy of the request
app.route("GET", "/later/{k}", function(req)
    local k = req.params.k
    spawn(function()
        local waited = 0
        while not shared.get(k .. ":go") and waited < 60000 do
            sleep(10)
            waited = waited + 10
        end
        shared.set(k, json.encode {
            param = req.params.k, query = req.query, header = req.headers["x-t"], peer = req.peer,
            by_method = req:header("X-T"), absent = req:header("x-absent") == nil,
        })
    end)
    return 200, { ok = true }
end)

app.route("GET", "/spawn-error", function(req)
    spawn(function() error("spawned boom") end)
    return 200, { ok = true }
end)

-- memory held by a module-level table, for seckilld_lua_memory_bytes
local ballast
app.route("POST", "/ballast", function(req)
    local n = tonumber(req.query.kb) or 1024
    ballast = {}
    for i = 1, n do
        ballast[i] = string.rep("x", 1000) .. i
    end
    return 200, { kb = n }
end)

app.route("DELETE", "/ballast", function(req)
    ballast = nil
    collectgarbage()
    collectgarbage()
    return 200, { ok = true }
end)
