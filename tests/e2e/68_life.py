"""The order's life (issue 22, API-v1.2.md): pay through the signed webhook, cancel, expire; every answer of the
contract; the stock released exactly once and sold again; races of a payment with an expiry and with a cancel; and
the faults around a release (MySQL down while orders expire, Redis restarted empty while orders wait for payment, a
process killed in the middle of a burst of expiries). Asserts rows in MySQL, counts in Redis and the answers."""
import concurrent.futures
import hashlib
import hmac
import json
import os
import random
import signal
import time
import uuid

import lib

SALE_CONF = os.path.join(lib.SCRIPTS, "sale.conf")
SHIPPED = os.path.join(lib.ROOT, "scripts")
TOKEN = {"Authorization": "Bearer test-token"}
SECRET = "payment-secret-of-the-tests-0123"
# the expire task looks every 200 ms: an order expires within a fraction of a second of its deadline
CONF = lib.conf_plus(SALE_CONF, "sale = { expire_ms = 200 },", "seckilld-life-")


def server(strategy="watch", env=None, **kw):
    e = {"SECKILLD_STRATEGY": strategy, "SECKILLD_PAYMENT_SECRET": SECRET}
    e.update(env or {})
    return lib.Server(SHIPPED, workers=2, conf=CONF, env=e, wait_healthy=True, **kw)


def new_item(s, stock, pay_within_s=2, price=0, limit=1, buckets=None, prefix="life-"):
    item = prefix + uuid.uuid4().hex[:10]
    body = {"stock": stock, "limit_per_user": limit, "pay_within_s": pay_within_s, "price": price}
    if buckets:
        body["buckets"] = buckets
    status, r = s.json("PUT", "/admin/items/" + item, body, TOKEN)
    assert status == 200, (status, r)
    if pay_within_s:
        assert r["item"]["pay_within_s"] == pay_within_s, r
    return item


def view(s, item):
    status, r = s.json("GET", "/admin/items/" + item, None, TOKEN)
    assert status == 200, (status, r)
    return r["item"]


def buy(s, item, user, quantity=1):
    status, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": user, "quantity": quantity})
    assert status == 200, (status, r)
    return r["order_id"]


def signed(body, t=None, secret=SECRET):
    raw = json.dumps(body) if isinstance(body, dict) else body
    t = int(time.time() * 1000) if t is None else t
    mac = hmac.new(secret.encode(), ("%d.%s" % (t, raw)).encode(), hashlib.sha256).hexdigest()
    return raw, {"Seckill-Signature": "t=%d,v1=%s" % (t, mac), "Content-Type": "application/json"}


def pay(s, order_id, amount, payment_id=None, **kw):
    raw, headers = signed({"payment_id": payment_id or "pay-" + uuid.uuid4().hex, "order_id": order_id,
                           "amount": amount}, **kw)
    status, _, data = s.request("POST", "/payments/callback", raw, headers)
    return status, data


def cancel(s, order_id, user):
    return s.json("POST", "/order/%s/cancel" % order_id, {"user_id": user})


def order(s, order_id):
    status, r = s.json("GET", "/order/" + order_id)
    assert status == 200, (status, r)
    return r["order"]


def rows(sql):
    return lib.mysql_query(sql)


def statuses_of(ids):
    out = {}
    ids = list(ids)
    for i in range(0, len(ids), 500):
        for oid, st, rel in rows("SELECT order_id, status, released FROM orders WHERE order_id IN (%s)"
                                 % ",".join("'%s'" % x for x in ids[i:i + 500])):
            out[oid] = (st, int(rel))
    return out


def user_count(item, user):
    return int(lib.redis_cli("HGET", "seckill:{%s}:users" % item, user) or 0)


def assert_books(s, item, stock, held_units):
    """stock_left + sold == stock_initial, with sold the units of the orders that hold units; MySQL agrees"""
    v = view(s, item)
    assert v["stock_initial"] == stock and v["stock_left"] + v["sold"] == stock, v
    assert v["sold"] == held_units, (v, held_units)
    live = rows("SELECT CAST(COALESCE(SUM(quantity), 0) AS SIGNED) FROM orders WHERE item_id = '%s' "
                "AND status IN ('created', 'paid')" % item)[0][0]
    assert int(live) == held_units, (live, held_units)
    status, a = s.json("GET", "/admin/items/%s/audit" % item, None, TOKEN)
    assert status == 200 and a["audit"]["drift"] == 0, a
    return v


def wait_released(ids, timeout=60):
    ids = set(ids)
    lib.wait_until(lambda: all(rel == 1 for _, rel in statuses_of(ids).values()) and len(statuses_of(ids)) == len(ids),
                   timeout, interval=0.2, what="%d orders released" % len(ids))


def flow(strategy):
    with server(strategy) as s:
        item = new_item(s, 10, pay_within_s=300, price=250)  # paid and cancelled in time
        short = new_item(s, 10, pay_within_s=1, price=250)   # left to expire
        o1, o2, o3 = buy(s, item, "u1"), buy(s, item, "u2"), buy(s, short, "u3")
        lib.wait_persisted([o1, o2])
        first = order(s, o1)
        assert first["status"] == "created" and first["expires_at"] is not None, first
        # its hash outlives the deadline (order_ttl_s after it), where a release finds which buckets gave its units
        lib.wait_until(lambda: lib.redis_cli("HGET", lib.order_key(o2), "status") == "created", 30,
                       what="o2 marked created")
        assert int(lib.redis_cli("TTL", lib.order_key(o2))) > 3600 + 250, lib.redis_cli("TTL", lib.order_key(o2))

        # pay o1: paid; the same payment again: the first answer byte for byte; another payment: refund_due
        pid = "pay-" + uuid.uuid4().hex
        st, a = pay(s, o1, 250, pid)
        assert st == 200, (st, a)
        ans = json.loads(a)
        assert ans["outcome"] == "paid" and ans["order"]["status"] == "paid", ans
        st2, a2 = pay(s, o1, 250, pid)
        assert (st2, a2) == (st, a), (a, a2)
        st, a = pay(s, o1, 250)
        ans = json.loads(a)
        assert st == 200 and ans["outcome"] == "refund_due" and ans["reason"] == "already_paid", ans

        # cancel o2 (twice: the same answer), then cancelling the paid o1 is 409 already_paid
        st, c = cancel(s, o2, "u2")
        assert st == 200 and c["order"]["status"] == "cancelled", (st, c)
        assert cancel(s, o2, "u2") == (st, c)
        st, c = cancel(s, o1, "u1")
        assert st == 409 and c["error"] == "already_paid" and c["order"]["status"] == "paid", (st, c)

        # o3 is never paid: it expires; a late payment is refund_due (expired) and takes no stock
        lib.wait_until(lambda: order(s, o3)["status"] == "expired", 30, what="o3 expired")
        st, a = pay(s, o3, 250)
        ans = json.loads(a)
        assert st == 200 and ans["outcome"] == "refund_due" and ans["reason"] == "expired", ans
        st, c = cancel(s, o3, "u3")
        assert st == 409 and c["error"] == "expired", (st, c)
        wait_released([o2, o3])

        # the books: one unit paid, two back on sale; the buyers of the released ones may buy again
        v = assert_books(s, item, 10, 1)
        assert v["paid"] == 1 and v["released"] == 1 and v["stock_left"] == 9, v
        v = assert_books(s, short, 10, 0)
        assert v["paid"] == 0 and v["released"] == 1 and v["stock_left"] == 10, v
        assert (user_count(item, "u1"), user_count(item, "u2"), user_count(short, "u3")) == (1, 0, 0)
        again = buy(s, item, "u2")
        lib.wait_persisted([again])
        assert_books(s, item, 10, 2)
        outcomes = rows("SELECT outcome, COUNT(*) FROM payments WHERE order_id IN ('%s', '%s') GROUP BY outcome "
                        "ORDER BY outcome" % (o1, o3))
        assert outcomes == [["paid", "1"], ["refund_due", "2"]], outcomes
        listed = s.json("GET", "/orders?user_id=u2")[1]["orders"]
        assert {o["order_id"]: o["status"] for o in listed if o["order_id"] in (o2, again)} == \
            {o2: "cancelled", again: "created"}, listed
        assert s.metric("seckilld_orders_paid_total") >= 1 and s.metric("seckilld_orders_refund_due_total") >= 2
        s.assert_no_errors_in_log()


def test_pay_cancel_expire_watch():
    flow("watch")


def test_pay_cancel_expire_eval():
    flow("eval")


def test_the_contract_s_refusals():
    with server() as s:
        item = new_item(s, 5, pay_within_s=60, price=100)
        oid = buy(s, item, "r1")
        lib.wait_persisted([oid])
        body = {"payment_id": "p-" + uuid.uuid4().hex, "order_id": oid, "amount": 100}
        raw, headers = signed(body)
        # signatures: forged, another secret, stale (6 minutes old), missing, malformed → 401, nothing changes
        forged = dict(headers, **{"Seckill-Signature": headers["Seckill-Signature"][:-4] + "0000"})
        for h in (forged, signed(body, secret="another-secret-0123456789")[1],
                  signed(body, t=int(time.time() * 1000) - 6 * 60 * 1000)[1], {}, {"Seckill-Signature": "v1=zz"}):
            st, _, data = s.request("POST", "/payments/callback", raw, h)
            assert st == 401 and json.loads(data)["error"] == "bad_signature", (st, data)
        # 400: a bad body (signed); 404: no such order; 422: the wrong amount, not recorded
        for bad in ('{"payment_id": "x", "order_id": "%s"}' % oid, "[1]", "{", '{"payment_id": "", "order_id": "a",'
                    ' "amount": 1}'):
            r, h = signed(bad)
            st, _, data = s.request("POST", "/payments/callback", r, h)
            assert st == 400 and json.loads(data)["error"] == "bad_request", (bad, st, data)
        st, data = pay(s, "nosuch.order", 100)
        assert st == 404 and json.loads(data)["error"] == "unknown_order", (st, data)
        pid = "p-" + uuid.uuid4().hex
        st, data = pay(s, oid, 99, pid)
        assert st == 422 and json.loads(data)["error"] == "amount_mismatch", (st, data)
        assert rows("SELECT COUNT(*) FROM payments WHERE payment_id = '%s'" % pid) == [["0"]]
        assert order(s, oid)["status"] == "created"
        # cancel: another user's order and no order are 404; a bad body 400
        assert cancel(s, oid, "someone-else")[0] == 404
        assert cancel(s, "nosuch.order", "r1")[0] == 404
        st, _, data = s.request("POST", "/order/%s/cancel" % oid, "{", {})
        assert st == 400, (st, data)
        assert order(s, oid)["status"] == "created"
    # without a payment secret the webhook answers 503
    with lib.Server(SHIPPED, workers=1, conf=CONF, env={"SECKILLD_PAYMENT_SECRET": ""}, wait_healthy=True) as s:
        st, data = pay(s, "any.order", 1)
        assert st == 503, (st, data)


def test_a_rotated_payment_secret_is_accepted_until_the_overlap_ends():
    old = "the-previous-payment-secret-42"
    for until, want in ((int(time.time() * 1000) + 3600000, 200), (int(time.time() * 1000) - 1000, 401)):
        conf = lib.conf_plus(CONF, 'payment_secret_previous = "%s", payment_secret_previous_until = %d,' % (old, until),
                             "seckilld-rot-")
        try:
            with lib.Server(SHIPPED, workers=1, conf=conf, env={"SECKILLD_PAYMENT_SECRET": SECRET},
                            wait_healthy=True) as s:
                item = new_item(s, 2, pay_within_s=60)
                oid = buy(s, item, "rot")
                st, data = pay(s, oid, 0, secret=old)
                assert st == want, (until, st, data)
                st, data = pay(s, oid, 0)  # the current secret, always
                assert st == 200, (st, data)
        finally:
            os.unlink(conf)


def test_a_queued_order_is_cancelled_and_expires():
    """`--role api` has no consumer: orders stay queued in Redis. A cancel persists one and cancels it; another
    expires from the queued set; both units sell again."""
    with server(args=("--role", "api")) as s:
        item = new_item(s, 2, pay_within_s=4)  # the cancel comes well before the deadline, even on a loaded machine
        o1, o2 = buy(s, item, "q1"), buy(s, item, "q2")
        assert order(s, o1)["status"] == "queued"
        assert s.json("POST", "/seckill/add", {"item_id": item, "user_id": "q3"})[0] == 409
        st, c = cancel(s, o1, "q1")
        assert st == 200 and c["order"]["status"] == "cancelled", (st, c)
        lib.wait_until(lambda: statuses_of([o2]).get(o2) == ("expired", 1), 30, what="queued order expired")
        wait_released([o1, o2])
        v = assert_books(s, item, 2, 0)
        assert v["released"] == 2 and v["stock_left"] == 2, v
        assert lib.redis_cli("ZCARD", "seckill:{%s}:queued" % item) == "0"
        buy(s, item, "q3")


def second_wave(strategy):
    with server(strategy) as s:
        item = new_item(s, 40, pay_within_s=6)  # room for 20 payments on a loaded machine before the deadline
        first = lib.buy_out(s.port, item, "w1", 60, concurrency=16)
        assert len(first) == 40
        assert s.json("POST", "/seckill/add", {"item_id": item, "user_id": "late"})[1]["error"] == "sold_out"
        ids = sorted(first)
        paid = ids[:20]
        for oid in paid:  # at once (a queued order is persisted by its payment)
            st, a = pay(s, oid, 0)
            assert st == 200 and json.loads(a)["outcome"] == "paid", (st, a)
        lib.wait_persisted(first)
        wait_released(ids[20:])
        # the released 20 sell again, to other buyers, and the sold-out answers stop
        lib.wait_until(lambda: view(s, item)["stock_left"] == 20, 30, what="20 units back")
        second = lib.buy_out(s.port, item, "w2", 40, concurrency=16)
        assert len(second) == 20, len(second)
        lib.wait_persisted(second)
        assert_books(s, item, 40, 40)


def test_second_wave_sells_released_units_to_other_buyers():
    second_wave("eval")


def test_second_wave_watch():
    second_wave("watch")


def test_a_bucketed_item_gives_every_part_back():
    """an order of a bucketed item that took units of several buckets (parts) gives each back to its bucket"""
    with server("eval") as s:
        item = new_item(s, 8, pay_within_s=4, limit=8, buckets=4)  # the cancel comes before the deadline
        stocks = lambda: [int(lib.redis_cli("GET", "seckill:{%s}:stock" % (item if b == 0 else "%s#%d" % (item, b)))
                              or 0) for b in range(4)]
        initial = stocks()
        big = buy(s, item, "b1", quantity=5)  # more than its own bucket holds: parts of others
        small = buy(s, item, "b2", quantity=3)
        assert sum(stocks()) == 0, (initial, stocks())
        st, c = cancel(s, big, "b1")
        assert st == 200 and c["order"]["status"] == "cancelled", (st, c)
        lib.wait_until(lambda: statuses_of([small]).get(small) == ("expired", 1), 30, what="the small order expired")
        wait_released([big])
        assert stocks() == initial, (stocks(), initial)
        v = assert_books(s, item, 8, 0)
        assert v["released"] == 8, v
        buy(s, item, "b3", quantity=8)  # every unit sells again (and expires in its turn)
        assert sum(stocks()) == 0, stocks()


def test_an_order_of_an_earlier_set_up_gives_nothing_to_the_new_one():
    """an item set up again (PUT) is a new sale: an order of the earlier one, parts and all, releases nothing into it"""
    with server("eval") as s:
        item = new_item(s, 4, pay_within_s=300, limit=4, buckets=2)
        old = buy(s, item, "ea1", quantity=3)  # more than its bucket's 2: a part from the other bucket
        lib.wait_persisted([old])
        st, r = s.json("PUT", "/admin/items/" + item,
                       {"stock": 4, "limit_per_user": 4, "pay_within_s": 300, "buckets": 2}, TOKEN)
        assert st == 200, (st, r)
        st, c = cancel(s, old, "ea1")
        assert st == 200 and c["order"]["status"] == "cancelled", (st, c)
        wait_released([old])
        v = view(s, item)
        assert v["stock_left"] == 4 and v["sold"] == 0 and v["stock_initial"] == 4, v


def races(strategy):
    """1,000 orders paid around their expires_at (± 30 ms) and 1,000 cancelled and paid at once: each ends in one final
    state, every losing payment is refund_due, and the books balance."""
    with server(strategy) as s:
        n = 1000
        item = new_item(s, n, pay_within_s=6)      # paid around the deadline
        other = new_item(s, n, pay_within_s=300)   # cancelled and paid at once
        reqs = [("POST", "/seckill/add", {"item_id": item if i < n else other, "user_id": "x%d" % i}, None)
                for i in range(2 * n)]
        ids = []
        for w in range(0, 2 * n, 100):  # in waves, so the deadlines spread over seconds and payments keep up
            ids += [json.loads(b)["order_id"] for _, b, _ in lib.run_concurrently(s.port, reqs[w:w + 100], 16)]
            time.sleep(0.3 if w < n else 0)
        lib.wait_persisted(ids)
        expiring, cancelled = ids[:n], ids[n:]
        # pay the first half around each order's own deadline, cancel and pay the second half together
        deadlines = {}
        for oid, st, exp in rows("SELECT order_id, status, expires_at FROM orders WHERE order_id IN (%s)"
                                 % ",".join("'%s'" % x for x in expiring)):
            deadlines[oid] = int(exp)
        reqs = []
        for oid in expiring:
            raw, h = signed({"payment_id": "r-" + oid, "order_id": oid, "amount": 0})
            reqs.append((deadlines[oid] + random.randint(-30, 30), ("POST", "/payments/callback", raw, h)))
        reqs.sort(key=lambda r: r[0])
        results = {}

        def send(scheduled):
            at, r = scheduled
            wait = at / 1000.0 - time.time()
            if wait > 0:
                time.sleep(wait)
            st, _, data = s.request(*r)
            results[json.loads(r[2])["order_id"]] = (st, json.loads(data))

        with concurrent.futures.ThreadPoolExecutor(16) as pool:  # each payment sent at its own time, ± 30 ms
            list(pool.map(send, reqs))
        both = []
        for i, oid in enumerate(cancelled):
            raw, h = signed({"payment_id": "c-" + oid, "order_id": oid, "amount": 0})
            both.append(("POST", "/payments/callback", raw, h))
            both.append(("POST", "/order/%s/cancel" % oid, {"user_id": "x%d" % (n + i)}, None))
        t0 = time.time()
        raced = lib.run_concurrently(s.port, both, concurrency=32)
        print("%d payments and cancels at once in %.2f s" % (len(both), time.time() - t0))
        wait_released([o for o, (st, _) in statuses_of(ids).items() if st != "paid"])
        final = statuses_of(ids)
        assert set(v[0] for v in final.values()) <= {"paid", "expired", "cancelled"}, final
        for oid in expiring:
            st, ans = results[oid]
            assert st == 200, (st, ans)
            want = "paid" if final[oid][0] == "paid" else "refund_due"
            assert ans["outcome"] == want and ans["order"]["status"] == final[oid][0], (ans, final[oid])
        for i, oid in enumerate(cancelled):
            pst, pans = raced[2 * i][0], json.loads(raced[2 * i][1])
            cst, cans = raced[2 * i + 1][0], json.loads(raced[2 * i + 1][1])
            assert pst == 200, (pst, pans)
            if final[oid][0] == "paid":
                assert pans["outcome"] == "paid" and cst == 409 and cans["error"] == "already_paid", (pans, cans)
            else:
                assert final[oid][0] == "cancelled" and cst == 200, (final[oid], cans)
                assert pans["outcome"] == "refund_due" and pans["reason"] == "cancelled", pans
        paid = sum(1 for v in final.values() if v[0] == "paid")
        print("races: around the deadline %d paid, %d expired; cancel and pay together %d paid, %d cancelled" % (
            sum(1 for o in expiring if final[o][0] == "paid"), sum(1 for o in expiring if final[o][0] == "expired"),
            sum(1 for o in cancelled if final[o][0] == "paid"), sum(1 for o in cancelled if final[o][0] != "paid")))
        refunds = int(rows("SELECT COUNT(*) FROM payments WHERE outcome = 'refund_due' AND order_id IN (%s)"
                           % ",".join("'%s'" % x for x in ids))[0][0])
        assert paid + refunds == 2 * n, (paid, refunds)
        assert_books(s, item, n, sum(1 for o in expiring if final[o][0] == "paid"))
        assert_books(s, other, n, sum(1 for o in cancelled if final[o][0] == "paid"))


def test_races_of_payments_with_expiry_and_cancel():
    races("eval")


def test_races_watch():
    races("watch")


if __name__ == "__main__":
    lib.main(globals())
