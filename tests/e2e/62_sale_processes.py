"""Several seckilld processes sell one item exactly (issue 13): two `--role api` processes (one per strategy) and one
`--role consumer` process against the harness's 3-master Redis Cluster and one standalone Kafka mock
(`seckilld --kafka-mock`). Redis decides; each process's sold-out mark is only a hint."""
import json
import os
import threading
import time
import uuid

os.environ["SK_E2E_REDIS"] = "cluster"  # every seckilld below on the cluster, lib.redis_cli too (before lib reads it)
import lib  # noqa: E402

CONF = os.path.join(lib.SCRIPTS, "sale.conf")
TOKEN = {"Authorization": "Bearer test-token"}
SHIPPED = os.path.join(lib.ROOT, "scripts")


def process(mock, role, strategy="watch"):
    return lib.Server(SHIPPED, workers=1, conf=CONF, args=["--role", role], wait_healthy=True,
                      env={"SECKILLD_KAFKA": mock.bootstraps, "SECKILLD_STRATEGY": strategy})


def buy(item, user):
    return ("POST", "/seckill/add", {"item_id": item, "user_id": user}, None)


def test_two_api_processes_and_a_consumer_sell_one_item_exactly():
    stock = 400
    with lib.KafkaMock() as mock, process(mock, "consumer"), process(mock, "api", "watch") as a, \
            process(mock, "api", "eval") as b:
        item = "it-" + uuid.uuid4().hex[:12]
        st, r = a.json("PUT", "/admin/items/" + item, {"stock": stock, "limit_per_user": 2}, TOKEN)
        assert st == 200, (st, r)
        # one greedy user (limit 2) asking 20 times on each process, among 600 buyers over both at once
        reqs = {a: [buy(item, "greedy")] * 20 + [buy(item, "a-%d" % i) for i in range(300)],
                b: [buy(item, "greedy")] * 20 + [buy(item, "b-%d" % i) for i in range(300)]}
        out = {}

        def run(s):
            out[s.port] = lib.run_concurrently(s.port, reqs[s], concurrency=32)
        ts = [threading.Thread(target=run, args=(s,)) for s in (a, b)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        elapsed = time.monotonic() - t0
        results = out[a.port] + out[b.port]
        c = lib.statuses(results)
        orders = {}
        greedy = 0
        for st, body, _ in results:
            if st == 200:
                o = json.loads(body)
                orders[o["order_id"]] = o["quantity"]
                greedy += o["user_id"] == "greedy"
        assert sum(orders.values()) == stock and len(orders) == stock, c
        assert greedy == 2, (greedy, c)
        assert set(c) <= {200, "409 sold_out", "409 limit_exceeded"}, c
        assert all(lib.statuses(out[s.port]).get(200, 0) > 0 for s in (a, b)), "both processes sold"
        assert lib.redis_cli("GET", "seckill:{%s}:stock" % item) == "0"
        assert lib.redis_cli("GET", "seckill:{%s}:sold" % item) == str(stock)
        assert lib.redis_cli("HGET", "seckill:{%s}:users" % item, "greedy") == "2"
        # each order once in MySQL, written by the consumer process (the api processes consume nothing)
        lib.wait_persisted(orders, timeout=60)
        rows = lib.mysql_query("SELECT COUNT(*), COALESCE(SUM(quantity), 0) FROM orders WHERE item_id = '%s'" % item)
        assert rows == [[str(stock), str(stock)]], rows
        # an order taken on one process is found by its id alone on the other
        for s, oid in ((a, sorted(orders)[0]), (b, sorted(orders)[-1])):
            st, r = s.json("GET", "/order/" + oid)
            assert st == 200 and r["order"]["item_id"] == item, (st, r)
        # the sold-out mark is each process's hint: re-armed on one process, the other sells again within its TTL
        for s in (a, b):
            st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "late"})
            assert st == 409 and r["error"] == "sold_out", (st, r)
        st, r = a.json("PUT", "/admin/items/" + item, {"stock": 5, "limit_per_user": 2}, TOKEN)
        assert st == 200, (st, r)

        sent = []

        def sells_on_b():
            sent.append(time.monotonic())
            st, r = b.json("POST", "/seckill/add", {"item_id": item, "user_id": "after-%s" % uuid.uuid4().hex[:6]})
            assert st in (200, 409), (st, r)
            return st == 200
        t1 = time.monotonic()
        lib.wait_until(sells_on_b, 5, interval=0.1, what="the other process to sell the re-armed item")
        # the hint had lapsed when the buy that sold was sent; how long that buy took to answer (a loaded machine: a
        # buy waits for Kafka's delivery report) is not the hint's
        hint = sent[-1] - t1
        assert hint < 2.5, hint
        print("     %d units sold exactly by two api processes in %.2fs (%s); the other process's sold-out hint "
              "lasted %.2fs" % (stock, elapsed, c, hint))


lib.main(globals())
