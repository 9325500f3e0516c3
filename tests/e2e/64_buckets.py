"""Stock buckets (issue 13, item 3): an item's stock spread over K keys with different hash tags
(PUT /admin/items/{id} {"buckets": K}; common/buckets.lua). Exact sell-outs for both strategies, the per-user limit
across buckets, orders that take units from several buckets (parts), sold_out only when the whole item has too
little, parts given back by a compensation and by the sweeper, and the admin view and audit summing the buckets.
Runs on the single Redis and (tests/tests.cmake) on the harness's cluster, where the buckets are on different
masters."""
import json
import os
import random
import shutil
import time
import uuid

import lib

CONF = os.path.join(lib.SCRIPTS, "sale.conf")
TOKEN = {"Authorization": "Bearer test-token"}
SHIPPED = os.path.join(lib.ROOT, "scripts")
# the sweeper looks often and keeps a bucketed order's parts once its order is with the consumer
FAST_SWEEP = lib.conf_plus(CONF, "sale = { sweep_ms = 300, sweep_after_ms = 0 },", "seckilld-bk-")


def server(strategy="watch", scripts=SHIPPED, conf=CONF, **kw):
    return lib.Server(scripts, workers=2, conf=conf, env={"SECKILLD_STRATEGY": strategy}, wait_healthy=True, **kw)


def new_item(s, stock, buckets, limit=1):
    item = "bk-" + uuid.uuid4().hex[:10]
    status, r = s.json("PUT", "/admin/items/" + item, {"stock": stock, "limit_per_user": limit, "buckets": buckets},
                       TOKEN)
    assert status == 200 and r["item"]["buckets"] == buckets and r["item"]["stock_left"] == stock, (status, r)
    return item


def tag(item, b):
    return item if b == 0 else "%s#%d" % (item, b)


def key(item, b, what):
    return "seckill:{%s}:%s" % (tag(item, b), what)


def bucket_stocks(item, k):
    return [int(lib.redis_cli("GET", key(item, b, "stock")) or 0) for b in range(k)]


def held_parts(item, k):
    return sum(int(lib.redis_cli("ZCARD", key(item, b, "parts")) or 0) for b in range(k))


def buy(item, user, quantity=1):
    return ("POST", "/seckill/add", {"item_id": item, "user_id": user, "quantity": quantity}, None)


def tally(results):
    orders, codes = {}, {}
    for st, body, _ in results:
        b = json.loads(body)
        k = st if st == 200 else "%d %s" % (st, b.get("error"))
        codes[k] = codes.get(k, 0) + 1
        if st == 200:
            orders[b["order_id"]] = b["quantity"]
    return orders, codes


def view(s, item):
    status, r = s.json("GET", "/admin/items/" + item, None, TOKEN)
    assert status == 200, (status, r)
    return r["item"]


def assert_books(s, item, k, stock, orders):
    v = view(s, item)
    assert v["stock_left"] + v["sold"] == v["stock_initial"] == stock, v
    assert v["sold"] == sum(orders.values()), (v, sum(orders.values()))
    assert sum(bucket_stocks(item, k)) == v["stock_left"], (bucket_stocks(item, k), v)
    lib.wait_persisted(orders, timeout=60)
    lib.wait_until(lambda: view(s, item)["orders_persisted"] == v["sold"], 30, what="orders_persisted == sold")
    status, a = s.json("GET", "/admin/items/%s/audit" % item, None, TOKEN)
    assert status == 200 and a["audit"]["drift"] == 0 and a["audit"]["redis"]["sold"] == v["sold"], a


def sellout(strategy, k=8):
    with server(strategy) as s:
        item = new_item(s, 1000, k)
        # every bucket holds its share
        assert bucket_stocks(item, k) == [1000 // k + (1 if b < 1000 % k else 0) for b in range(k)]
        results = lib.run_concurrently(s.port, [buy(item, "u-%d" % i) for i in range(1500)], concurrency=64)
        orders, codes = tally(results)
        assert codes == {200: 1000, "409 sold_out": 500}, codes
        assert bucket_stocks(item, k) == [0] * k
        # each user's count is in the user's bucket, once
        assert sum(int(lib.redis_cli("HLEN", key(item, b, "users"))) for b in range(k)) == 1000
        assert_books(s, item, k, 1000, orders)


def test_sellout_over_8_buckets_watch():
    sellout("watch")


def test_sellout_over_8_buckets_eval():
    sellout("eval")


def parts_and_limits(strategy):
    with server(strategy, conf=FAST_SWEEP) as s:
        k = 8
        # the per-user limit holds across buckets: 50 parallel buys of one user, limit 2
        item = new_item(s, 100, k, limit=2)
        orders, codes = tally(lib.run_concurrently(s.port, [buy(item, "greedy")] * 50, concurrency=50))
        assert codes == {200: 2, "409 limit_exceeded": 48}, codes

        # 16 units over 8 buckets (2 each): 5 units need parts of at least two other buckets
        item = new_item(s, 16, k, limit=20)
        st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "five", "quantity": 5})
        assert st == 200 and r["quantity"] == 5, (st, r)
        got = {r["order_id"]: 5}
        assert sum(bucket_stocks(item, k)) == 11
        # 12 > the 11 left: sold_out, and every part it gathered went back
        st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "twelve", "quantity": 12})
        assert (st, r["error"]) == (409, "sold_out"), (st, r)
        assert sum(bucket_stocks(item, k)) == 11
        # exactly what is left: sold, from every bucket that had some
        st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "eleven", "quantity": 11})
        assert st == 200, (st, r)
        got[r["order_id"]] = 11
        assert bucket_stocks(item, k) == [0] * k
        st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "late"})
        assert (st, r["error"]) == (409, "sold_out"), (st, r)
        assert_books(s, item, k, 16, got)
        # once its order is with the consumer, the sweeper keeps each part (no part stays held)
        lib.wait_until(lambda: held_parts(item, k) == 0, 30, what="parts kept by the sweeper")
        assert view(s, item)["sold"] == 16

        # mixed quantities, demand over supply: the 200s add up to the stock exactly, once buyers of one unit
        # have taken whatever the bigger buyers could not
        item = new_item(s, 301, k, limit=3)
        rnd = random.Random(11)
        reqs = [buy(item, "m-%d" % i, rnd.randint(1, 3)) for i in range(220)]
        orders, codes = tally(lib.run_concurrently(s.port, reqs, concurrency=32))
        assert set(codes) <= {200, "409 sold_out"}, codes
        n = 0
        while sum(bucket_stocks(item, k)) > 0 and n < 400:
            st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "one-%d" % n})
            if st == 409 and r["error"] == "sold_out":
                # the process-wide sold-out mark is a hint of at most a second (a pass that found every bucket empty
                # while another buyer's parts were on their way back): Redis decides once it is gone
                time.sleep(1.1)
                st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "one-%d" % n})
            assert st == 200, (st, r, bucket_stocks(item, k))
            orders[r["order_id"]] = 1
            n += 1
        assert sum(orders.values()) == 301, (sum(orders.values()), codes, n)
        st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "after"})
        assert (st, r["error"]) == (409, "sold_out"), (st, r)
        assert_books(s, item, k, 301, orders)
        print("     %s: mixed quantities %s, then %d single units" % (strategy, codes, n))


def test_parts_and_limits_watch():
    parts_and_limits("watch")


def test_parts_and_limits_eval():
    parts_and_limits("eval")


def test_kafka_refusal_gives_every_part_back():
    d = lib.sale_scripts()
    try:
        with server("eval", scripts=d) as s:
            s.allowed_errors = [r"kafka", r"rdkafka", r"broker"]
            k = 8
            item = new_item(s, 16, k, limit=20)
            assert s.json("POST", "/_test/kafka/down")[0] == 200
            st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "big", "quantity": 10}, timeout=20)
            assert st == 503, (st, r)
            # the order's own units, its parts in other buckets and the user's count all went back
            assert bucket_stocks(item, k) == [2] * k
            assert held_parts(item, k) == 0
            assert all(lib.redis_cli("HGET", key(item, b, "users"), "big") in ("", "0") for b in range(k))
            assert s.json("POST", "/_test/kafka/up")[0] == 200
            lib.wait_until(lambda: s.json("POST", "/seckill/add", {"item_id": item, "user_id": "big", "quantity": 10},
                                          timeout=20)[0] == 200, 30, interval=0.5, what="the buy once Kafka is back")
            assert sum(bucket_stocks(item, k)) == 6
    finally:
        shutil.rmtree(d)


def test_a_part_whose_order_never_came_is_given_back_by_the_sweeper():
    """a process that died between taking a part and recording its order leaves the part held: the sweeper sees no
    order (Redis, MySQL, after a barrier) and gives the units back"""
    with server("watch", conf=FAST_SWEEP) as s:
        k = 4
        item = new_item(s, 40, k)
        b = 2
        order_id = "x0.orphan-" + uuid.uuid4().hex[:8]
        part = key(item, b, "part:" + order_id)
        lib.redis_cli("DECRBY", key(item, b, "stock"), 3)
        lib.redis_cli("INCRBY", key(item, b, "sold"), 3)
        lib.redis_cli("HSET", part, "units", 3, "status", "held", "order_id", order_id)
        lib.redis_cli("ZADD", key(item, b, "parts"), 1, order_id)
        assert view(s, item)["stock_left"] == 37
        lib.wait_until(lambda: lib.redis_cli("HGET", part, "status") == "returned", 30, what="the part given back")
        assert bucket_stocks(item, k) == [10] * k
        assert view(s, item)["sold"] == 0 and held_parts(item, k) == 0


def test_admin_buckets_validation_and_setting_up_again():
    with server() as s:
        item = "bk-" + uuid.uuid4().hex[:10]
        for bad in (0, 65, 2.5, "4", -1):
            st, r = s.json("PUT", "/admin/items/" + item, {"stock": 10, "buckets": bad}, TOKEN)
            assert (st, r["error"]) == (400, "bad_request") and "buckets" in r["message"], (bad, st, r)
        new = new_item(s, 80, 8)
        lib.run_concurrently(s.port, [buy(new, "p-%d" % i) for i in range(20)], concurrency=8)
        # set up again with fewer buckets: the old ones beyond are gone, the stock is the new one's
        st, r = s.json("PUT", "/admin/items/" + new, {"stock": 30, "buckets": 2}, TOKEN)
        assert st == 200 and r["item"]["buckets"] == 2, (st, r)
        assert bucket_stocks(new, 2) == [15, 15]
        assert all(lib.redis_cli("EXISTS", key(new, b, "stock")) == "0" for b in range(2, 8))
        orders, codes = tally(lib.run_concurrently(s.port, [buy(new, "q-%d" % i) for i in range(40)], concurrency=8))
        assert codes == {200: 30, "409 sold_out": 10}, codes
        # one bucket is the plain layout: no "buckets" in the view
        st, r = s.json("PUT", "/admin/items/" + new, {"stock": 5, "buckets": 1}, TOKEN)
        assert st == 200 and "buckets" not in r["item"], r
        assert lib.redis_cli("GET", key(new, 0, "stock")) == "5" and lib.redis_cli("EXISTS", key(new, 1, "stock")) == "0"


lib.main(globals())
