-- tests/e2e/13_logs.py: request ids, log fields, the access log
app.route("GET", "/hello/{item_id}", function(req)
    log.info("handling", { item = req.params.item_id, n = 3, ok = true, note = "two words" })
    req:annotate { user_id = "u-1", order_id = "o-" .. req.params.item_id, ignored = "x" }
    spawn(function()
        sleep(1)
        log.info("spawned child")
    end)
    return 200, { ok = true, id = req.id }
end)

app.route("GET", "/plain", function(req)
    log.warn("no fields", "two parts")
    return 200, { id = req.id }
end)

app.route("GET", "/slow", function(req)
    sleep(tonumber(req.query.ms) or 500)
    log.info("slow done")
    return 200, { ok = true }
end)

app.route("GET", "/fail", function(req)
    error("boom")
end)

-- (last, so that the handlers' line numbers the tests assert stay put) the access log's fields beside method, path,
-- status and latency: a route parameter of these names, or req:annotate; "ignored" is annotated above but not
-- declared, so it never shows
app.access_log_fields { "item_id", "user_id", "order_id" }
