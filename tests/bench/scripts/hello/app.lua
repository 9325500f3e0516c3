-- The benchmark's trivial Lua route: the same answer as the C-only /_c/hello route.
app.route("GET", "/hello", function(req)
    return 200, { ok = true, hello = "world" }
end)
