-- tests/bench/kafka.sh: one message per request, answered after its delivery report (no consumer.lua here, so the
-- benchmark measures producing only)
app.route("POST", "/one", function(req)
    local partition, offset = kafka.produce(nil, req.body or "")
    if not partition then
        return 503, { error = offset }
    end
    return 200, { partition = partition, offset = offset }
end)
