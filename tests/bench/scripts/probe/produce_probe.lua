-- tests/bench/sale.sh adds this route to a copy of the shipped scripts (never shipped): the bare Kafka produce round
-- trip through the same producer and the same embedded mock as the sale's buys, so the sale table can show what a
-- buy adds over the broker's own latency. One message per request, about an order's size, to a topic of its own
-- (the consumer never sees it); answered once its delivery report is in.
local topic = config.kafka.topic .. ".probe"
app.route("POST", "/_bench/produce", function(req)
    local partition, err = kafka.produce(topic, req.body or "", { key = uuid() })
    if partition == nil then
        return 503, { ok = false, error = tostring(err) }
    end
    return 200, { ok = true, partition = partition }
end)
