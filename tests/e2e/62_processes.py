"""Several seckilld processes selling one item (issue 13, item 4): two `--role api` processes and one
`--role consumer` process share one Redis, MySQL and one standalone Kafka mock (`--kafka-mock`). The sale is exact
across processes (sold == stock, each order once in MySQL, persisted only by the consumer process), and each
process's sold-out mark is only a hint: Redis decides, so an item set up again through one process sells again
through the other within the mark's second."""
import json
import os
import threading
import time
import uuid

import lib

CONF = os.path.join(lib.SCRIPTS, "sale.conf")
TOKEN = {"Authorization": "Bearer test-token"}
SHIPPED = os.path.join(lib.ROOT, "scripts")


def process(mock, strategy, role):
    return lib.Server(SHIPPED, workers=2, conf=CONF, args=["--role", role], wait_healthy=True,
                      env={"SECKILLD_KAFKA": mock.bootstraps, "SECKILLD_STRATEGY": strategy})


def put_item(s, item, stock):
    status, r = s.json("PUT", "/admin/items/" + item, {"stock": stock, "limit_per_user": 1}, TOKEN)
    assert status == 200, (status, r)


def buys(item, users):
    return [("POST", "/seckill/add", {"item_id": item, "user_id": u}, None) for u in users]


def sell_through(apis, item, users):
    """the users' buys, split over the api processes and sent at once; the answers of all of them"""
    out = [None] * len(apis)

    def run(i):
        out[i] = lib.run_concurrently(apis[i].port, buys(item, users[i::len(apis)]), concurrency=32)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(apis))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def tally(answers):
    orders, codes = {}, {}
    for st, body, _ in answers:
        b = json.loads(body)
        key = st if st == 200 else "%d %s" % (st, b.get("error"))
        codes[key] = codes.get(key, 0) + 1
        if st == 200:
            orders[b["order_id"]] = b["quantity"]
    return orders, codes


def two_apis_one_consumer(strategy):
    with lib.KafkaMock() as mock, process(mock, strategy, "consumer") as consumer, \
            process(mock, strategy, "api") as a, process(mock, strategy, "api") as b:
        item = "mp-" + uuid.uuid4().hex[:10]
        put_item(a, item, 600)
        per = sell_through([a, b], item, ["u%d" % i for i in range(900)])
        orders, codes = {}, {}
        for answers in per:
            o, c = tally(answers)
            assert o, "each api process sold some: %s" % c
            orders.update(o)
            for k, v in c.items():
                codes[k] = codes.get(k, 0) + v
        assert codes == {200: 600, "409 sold_out": 300}, codes
        assert sum(orders.values()) == 600
        assert lib.redis_cli("GET", "seckill:{%s}:stock" % item) == "0"
        assert lib.redis_cli("GET", "seckill:{%s}:sold" % item) == "600"
        assert lib.redis_cli("HLEN", "seckill:{%s}:users" % item) == "600"
        lib.wait_persisted(orders, timeout=60)
        rows = lib.mysql_query("SELECT COUNT(*), SUM(quantity) FROM orders WHERE item_id = '%s'" % item)
        assert rows == [["600", "600"]], rows
        # only the consumer process consumes: the api processes have no consumer at all
        for s in (a, b):
            assert "consumer" not in s.json("GET", "/healthz")[1], s.json("GET", "/healthz")
        assert consumer.json("GET", "/healthz")[1].get("consumer") in ("idle", "ok"), consumer.json("GET", "/healthz")

        # both processes hold a sold-out mark now; set the item up again through b: a sells again once its mark
        # (a hint of at most a second) is gone, because Redis decides
        for s in (a, b):
            st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "late-" + uuid.uuid4().hex[:6]})
            assert (st, r["error"]) == (409, "sold_out"), (st, r)
        put_item(b, item, 5)
        t0 = time.monotonic()
        again = {}

        def sold_again():
            st, r = a.json("POST", "/seckill/add", {"item_id": item, "user_id": "again-%d" % len(again)})
            if st == 200:
                again[r["order_id"]] = 1
            return st == 200
        lib.wait_until(sold_again, 5, interval=0.05, what="process a to sell the item set up through b")
        assert time.monotonic() - t0 < 3.0
        lib.wait_persisted(again, timeout=30)
        print("     %s: 600 units over 2 api processes (%s per process), sells again %.2f s after a re-setup"
              % (strategy, "/".join(str(len(tally(x)[0])) for x in per), time.monotonic() - t0))


def test_two_api_processes_and_a_consumer_process_watch():
    two_apis_one_consumer("watch")


def test_two_api_processes_and_a_consumer_process_eval():
    two_apis_one_consumer("eval")


lib.main(globals())
