-- Routes for tests/e2e/50_kafka.py and tests/bench/kafka.sh: produce through the kafka binding.

-- POST /produce/{prefix}?from=A&count=N: produces values "<prefix>-A" .. "<prefix>-(A+N-1)" one after the other,
-- each waiting for its delivery report; answers what every call returned.
app.route("POST", "/produce/{prefix}", function(req)
    local from = tonumber(req.query.from) or 0
    local count = tonumber(req.query.count) or 1
    local size = tonumber(req.query.size)
    local offsets, errors = {}, {}
    for i = from, from + count - 1 do
        local value = req.params.prefix .. "-" .. i
        if size and #value < size then
            value = value .. string.rep("x", size - #value - 1) .. "|"
        end
        local key = req.query.key or value -- one key keeps a sequence in one partition
        local partition, offset = kafka.produce(nil, value, { key = key, headers = { origin = "e2e" } })
        if partition then
            offsets[#offsets + 1] = { value, partition, offset }
        else
            errors[#errors + 1] = { value, offset }
        end
    end
    return 200, { offsets = offsets, errors = errors }
end)

-- POST /one: one message (the body) to the configured topic; the benchmark's route
app.route("POST", "/one", function(req)
    local partition, offset = kafka.produce(nil, req.body or "")
    if not partition then
        return 503, { error = offset }
    end
    return 200, { partition = partition, offset = offset }
end)

-- POST /timed/{prefix}?count=N: like /produce but reports how long each call took (broker-down test)
app.route("POST", "/timed/{prefix}", function(req)
    local count = tonumber(req.query.count) or 1
    local results = {}
    for i = 1, count do
        local t0 = now()
        local value = req.params.prefix .. "-" .. i
        -- keyed: an unkeyed message would avoid partitions whose leader is down
        local partition, offset = kafka.produce(nil, value, { key = value })
        results[#results + 1] = { ok = partition ~= nil, err = not partition and offset or nil, ms = now() - t0 }
    end
    return 200, results
end)

app.route("POST", "/broker/{id}/{state}", function(req)
    local id = tonumber(req.params.id)
    if not kafka.mock_broker_down then
        return 400, { error = "not embedded" }
    end
    local ok, err
    if req.params.state == "down" then
        ok, err = kafka.mock_broker_down(id)
    else
        ok, err = kafka.mock_broker_up(id)
    end
    return ok and 200 or 404, { ok = ok, err = err }
end)

local sink = require "sink"

-- which sink the consumer (same scripts, same environment) writes to
app.route("GET", "/sink", function(req)
    return 200, { kind = sink.kind() }
end)

app.route("GET", "/topics", function(req)
    return 200, { topic = kafka.topic(), dlq = kafka.dead_letter_topic() }
end)

-- POST /produce_to/{partition}?value=V&key=K: one message to an explicit partition
app.route("POST", "/produce_to/{partition}", function(req)
    local partition, offset = kafka.produce(nil, req.query.value or "v",
        { partition = tonumber(req.params.partition), key = req.query.key })
    if not partition then
        return 503, { error = offset }
    end
    return 200, { partition = partition, offset = offset }
end)

-- GET /partitions[?topic=T]: kafka.partitions
app.route("GET", "/partitions", function(req)
    local n, err = kafka.partitions(req.query.topic)
    return 200, { n = n or json.null, err = err or json.null }
end)

-- GET /consumer_status: kafka.consumer_status() of this process (null when it runs no consumer)
app.route("GET", "/consumer_status", function(req)
    return 200, { status = kafka.consumer_status() or json.null }
end)
