-- Test-only routes added to a copy of the shipped scripts (never shipped): fault injection on the embedded Kafka.
app.route("POST", "/_test/kafka/{state}", function(req)
    for id = 1, 3 do
        local ok, err
        if req.params.state == "down" then
            ok, err = kafka.mock_broker_down(id)
        else
            ok, err = kafka.mock_broker_up(id)
        end
        if not ok then
            return 500, { ok = false, error = tostring(err) }
        end
    end
    return 200, { ok = true }
end)
