"""The books under real outages (issue 9), with the shipped config and scripts (only addresses overridden) and
buyers throughout: MySQL down, Kafka down, Redis restarted empty while the consumer is behind, a flood of unknown
items, the audit. Every accepted order must reach MySQL exactly once; a refused or failed buy takes nothing.

SK_LONG=1 (make test-long) runs the outages at the issue's full lengths: MySQL 60 s, Kafka 30 s."""
import asyncio
import itertools
import json
import os
import shutil
import tempfile
import threading
import time
import uuid

import lib

LONG = os.environ.get("SK_LONG") == "1"
SHIPPED = os.path.join(lib.ROOT, "scripts")
CONF = os.path.join(lib.ROOT, "conf", "seckilld.conf")
TOKEN = {"Authorization": "Bearer change-me"}
# what the shipped config bounds a buy to (kafka message.timeout.ms 5 s + compensation; http.deadline_ms 8 s)
ANSWER_BOUND_S = 8.0 + 1.0
# the errors an outage is expected to log
OUTAGE_LOG = [r"kafka", r"rdkafka", r"broker", r"mysql", r"redis", r"rebuil", r"paused", r"stock not restored",
              r"outcome unknown", r"consumer"]


def server(strategy, scripts=SHIPPED, workers=2, env=None, conf=CONF):
    e = {"SECKILLD_STRATEGY": strategy}
    e.update(env or {})
    s = lib.Server(scripts, workers=workers, conf=conf, env=e, wait_healthy=True)
    s.allowed_errors = OUTAGE_LOG
    return s


def new_item(s, stock, limit=1):
    item = "bk-" + uuid.uuid4().hex[:12]
    status, r = s.json("PUT", "/admin/items/" + item, {"stock": stock, "limit_per_user": limit}, TOKEN)
    assert status == 200, (status, r)
    return item


def buy_body(item, user):
    return {"item_id": item, "user_id": user}


class Buyers:
    """`n` keep-alive connections buying `item` as fresh users until stopped; every answer is kept with its start
    and end time (monotonic) and the user."""

    def __init__(self, port, item, n=8, prefix="u", rate=None):
        self.port, self.item, self.n = port, item, n
        self.pause = 1.0 / rate if rate else 0  # a buyer's think time: at most `rate` buys a second each
        self.users = ("%s-%d" % (prefix, i) for i in itertools.count())
        self.results = []  # (t0, t1, status, body dict or None, user)
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()))
        self.thread.start()

    async def _one(self):
        reader = writer = None
        while not self.stop_flag.is_set():
            user = next(self.users)
            t0 = time.monotonic()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(lib._encode("POST", "/seckill/add", buy_body(self.item, user), None))
                status, data = await asyncio.wait_for(lib._read_response(reader), 30)
                self.results.append((t0, time.monotonic(), status, json.loads(data) if data else None, user))
            except Exception as e:
                self.results.append((t0, time.monotonic(), None, {"exception": repr(e)}, user))
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.05)
            if self.results[-1][2] != 200:
                await asyncio.sleep(0.02)  # a refused buyer comes back a little later, as people do
            elif self.pause:
                await asyncio.sleep(max(0, self.pause - (time.monotonic() - t0)))
        if writer is not None:
            writer.close()

    async def _run(self):
        await asyncio.gather(*[self._one() for _ in range(self.n)])

    def stop(self):
        self.stop_flag.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "buyers did not stop"
        return self.results

    def accepted(self):
        return {r[3]["order_id"]: r[3]["quantity"] for r in self.results if r[2] == 200}


def item_view(s, item):
    status, r = s.json("GET", "/admin/items/" + item, None, TOKEN)
    assert status == 200, (status, r)
    return r["item"]


def audit(s, item):
    status, r = s.json("GET", "/admin/items/%s/audit" % item, None, TOKEN)
    assert status == 200, (status, r)
    return r["audit"]


def user_count(item, user):
    v = lib.redis_cli("HGET", "seckill:{%s}:users" % item, user)
    return int(v) if v else 0


def sell_out(s, item, prefix):
    """buys what is left (and 50 more) as fresh users, 32 at a time; every answer must be 200 or sold_out.
    Returns {order_id: quantity} of the 200s."""
    return lib.buy_out(s.port, item, prefix, item_view(s, item)["stock_left"] + 50, 32)


# ===== MySQL down for a long while: the consumer stalls and retries, never dead-letters =====

def mysql_outage(strategy):
    outage = 60 if LONG else 15
    with server(strategy) as s:
        item = new_item(s, 10 ** 6)
        # 8 buyers at up to 100 buys/s each: a minute's backlog is ~50,000 orders (unpaced, the embedded mock broker's
        # linear message lookup, not seckilld, would set the catch-up time: see the README)
        buyers = Buyers(s.port, item, rate=100)
        time.sleep(2)
        lib.services("mysql-stop")
        t_down = time.monotonic()
        try:
            stalled = lib.wait_until(lambda: s.json("GET", "/healthz")[1].get("consumer") == "stalled", 30,
                                     what="/healthz to show the consumer stalled")
            time.sleep(max(0, outage - (time.monotonic() - t_down)))
        finally:
            lib.services("mysql-start")
        t_up = time.monotonic()
        time.sleep(2)
        results = buyers.stop()
        ok = buyers.accepted()
        during = [r for r in results if t_down <= r[0] and r[1] <= t_up]
        assert sum(1 for r in during if r[2] == 200) > 0, "no buy was accepted while MySQL was down"
        assert all(r[2] in (200, 503) for r in results), {r[2] for r in results}
        catch_up = lib.wait_persisted(ok, timeout=240)
        assert s.metric("seckilld_kafka_dead_lettered_total") == 0
        assert s.metric("seckilld_kafka_consumer_offset_resets_total") == 0
        lib.wait_until(lambda: audit(s, item)["drift"] == 0 and audit(s, item)["redis"]["queued_orders"] == 0, 30,
                       what="the audit to show no drift")
        v = item_view(s, item)
        assert v["sold"] == v["orders_persisted"] == sum(ok.values()), v
        print("     %s: MySQL down %.0fs; %d orders accepted (%d during the outage), all persisted exactly once "
              "%.1fs after it came back; nothing dead-lettered" % (strategy, t_up - t_down, len(ok),
                                                                    sum(1 for r in during if r[2] == 200), catch_up))


def test_mysql_outage_watch():
    mysql_outage("watch")


def test_mysql_outage_eval():
    mysql_outage("eval")


# ===== Kafka down: bounded answers, nothing taken by a failure, an exact sell-out afterwards =====

def kafka_outage(strategy):
    outage = 30 if LONG else 12
    stock = 20000
    d = lib.sale_scripts()
    try:
        with server(strategy, scripts=d) as s:
            item = new_item(s, stock)
            buyers = Buyers(s.port, item)
            time.sleep(1.5)
            assert s.json("POST", "/_test/kafka/down")[0] == 200
            t_down = time.monotonic()
            time.sleep(outage)
            assert s.json("POST", "/_test/kafka/up")[0] == 200
            t_up = time.monotonic()
            time.sleep(2)
            results = buyers.stop()
            slowest = max(r[1] - r[0] for r in results)
            assert slowest <= ANSWER_BOUND_S, "a buyer waited %.1fs" % slowest
            assert all(r[2] in (200, 503) for r in results), {r[2] for r in results}
            failed = [r for r in results if r[2] != 200]
            assert failed, "Kafka was down for %ds and every buy succeeded?" % outage
            for r in failed:
                assert user_count(item, r[4]) == 0, "a failed buy kept the count of %s" % r[4]
            ok = buyers.accepted()
            rest = sell_out(s, item, "after")
            total = dict(ok)
            total.update(rest)
            assert sum(total.values()) == stock, (sum(total.values()), stock)
            assert lib.redis_cli("GET", "seckill:{%s}:stock" % item) == "0"
            lib.wait_persisted(total, timeout=60)
            v = item_view(s, item)
            assert v["sold"] == stock and v["stock_left"] == 0, v
            lib.wait_until(lambda: item_view(s, item)["orders_persisted"] == stock, 30, what="orders_persisted")
            print("     %s: Kafka down %.0fs: %d answers, %d failed (all 503, slowest %.1fs, none took stock); "
                  "sold out exactly afterwards" % (strategy, t_up - t_down, len(results), len(failed), slowest))
    finally:
        shutil.rmtree(d)


def test_kafka_outage_watch():
    kafka_outage("watch")


def test_kafka_outage_eval():
    kafka_outage("eval")


# ===== Redis restarted empty while the consumer is behind =====

def redis_loss(strategy):
    stock = 60000
    with server(strategy) as s:
        item = new_item(s, stock)
        buyers = Buyers(s.port, item, prefix="pre")
        time.sleep(2)
        lib.services("mysql-stop")  # the consumer falls behind: accepted orders wait on the topic
        time.sleep(3)
        lib.services("redis-stop")  # SIGKILL, and returns once the process is gone
        # the loss instant: the old Redis is dead from here on (before redis-stop returned it may still have been
        # answering, for as long as the harness took to start and send the kill: on a loaded machine well over
        # 200 ms, and a buy taken then on the old Redis is a legitimate 200)
        t_loss = time.monotonic()
        lib.services("redis-start")  # empty: the harness runs redis without persistence
        time.sleep(3)
        lib.services("mysql-start")
        t_mysql = time.monotonic()

        paused_at = [t_loss]  # when the last look that found the item still paused began: it was paused then

        def reopened():
            t = time.monotonic()
            st, body = s.json("GET", "/admin/items/%s/audit" % item, None, TOKEN)
            if st == 200 and body["audit"]["rebuilding"]:
                paused_at[0] = t
            return st == 200 and not body["audit"]["rebuilding"]
        lib.wait_until(reopened, 90, interval=0.3, what="the item to be rebuilt")
        t_rebuilt = time.monotonic()
        time.sleep(1)
        results = buyers.stop()
        before = {r[3]["order_id"]: r[3]["quantity"] for r in results if r[2] == 200 and r[0] < t_loss}
        assert len(before) > 50, len(before)
        codes = {r[2] for r in results}
        assert codes <= {200, 503}, codes  # never 404 unknown_item, never a fresh stock
        # between the loss and the rebuild, nothing new was sold: answers that ended before the last look that still
        # found the item paused (an audit on a loaded machine can take long; t_rebuilt is only when a look said so)
        window = [r for r in results if r[0] > t_loss and r[1] < paused_at[0]]
        assert window and all(r[2] == 503 for r in window), {r[2] for r in window}
        # every order answered 200 before the loss reaches MySQL, exactly once
        lib.wait_persisted(before, timeout=60)
        ok = buyers.accepted()
        lib.wait_persisted(ok, timeout=60)
        # the per-user limit survived the loss: a buyer from before it is refused
        first_user = next(r[4] for r in results if r[2] == 200 and r[0] < t_loss)
        st, body = s.json("POST", "/seckill/add", buy_body(item, first_user))
        assert (st, body["error"]) == (409, "limit_exceeded"), (st, body)
        # the rest of the stock sells exactly: no unit sold twice across the loss
        rest = sell_out(s, item, "post")
        total = dict(ok)
        total.update(rest)
        assert sum(total.values()) == stock, (sum(total.values()), stock, len(ok), len(rest))
        lib.wait_persisted(total, timeout=60)
        rows = lib.mysql_query("SELECT COALESCE(SUM(quantity),0) FROM orders WHERE item_id = '%s'" % item)
        assert int(rows[0][0]) == stock, rows
        a = audit(s, item)
        assert a["drift"] == 0 and a["redis"]["sold"] == stock and a["redis"]["stock_left"] == 0, a
        assert s.metric("seckilld_kafka_dead_lettered_total") == 0
        assert s.metric("seckilld_kafka_consumer_offset_resets_total") == 0
        print("     %s: %d orders accepted before the loss, all persisted; item paused %.1fs after MySQL returned; "
              "%d sold after, %d in all == stock" % (strategy, len(before), t_rebuilt - t_mysql, len(rest),
                                                     sum(total.values())))


def test_redis_loss_watch():
    redis_loss("watch")


def test_redis_loss_eval():
    redis_loss("eval")


# ===== memory stays flat under a flood of unknown items =====

def unknown_flood(strategy):
    """Live Lua memory before and after the flood, read by each worker right after a full collection of its VM.
    The sweeper is set apart (sale.sweep_ms one day): a pass allocates in bursts (with stale orders in Redis, left by
    the outages above, megabytes, and it holds them live while it waits for MySQL or a barrier), and on the worker
    running it that once read as ~20 MB "retained" after a flood. Reading the memory gauge 1.5 s after the
    collection, as this test used to, also counted whatever the tasks allocated in between."""
    n = 100000
    d = lib.sale_scripts()
    with open(CONF) as f:
        text = f.read()
    assert "        sweep_ms = 5000," in text and "\n    mysql = {\n" in text
    text = text.replace("        sweep_ms = 5000,", "        sweep_ms = 86400000,")
    schema = os.path.join(lib.ROOT, "conf", "schema.sql")  # the copy is elsewhere: name the shipped schema
    text = text.replace("\n    mysql = {\n", "\n    mysql = {\n        schema = %r,\n" % schema)
    conf = tempfile.NamedTemporaryFile("w", prefix="seckilld-flood-", suffix=".conf", delete=False)
    conf.write(text)
    conf.close()
    with server(strategy, scripts=d, workers=2, conf=conf.name) as s:
        def lua_mem():
            """live Lua memory of both workers, each read by the worker itself right after a full collection (which
            worker accepts a connection is the kernel's choice: ask on new connections until both answered)"""
            vms = {}
            for _ in range(200):
                st, b = s.json("POST", "/_test/gc")
                assert st == 200, (st, b)
                vms[b["vm"]] = b
                if len(vms) == 2:
                    break
            assert len(vms) == 2, "reached only %s" % vms
            return sum(b["kb"] for b in vms.values()) * 1024, vms
        ids = itertools.count()
        lib.hammer(s.port, lambda i: ("POST", "/seckill/add", buy_body("warm-%d" % next(ids), "u"), None), 16, 1)
        before, vms_before = lua_mem()
        sent = 0
        codes = {}
        while sent < n:
            out = lib.hammer(s.port, lambda i: ("POST", "/seckill/add",
                                                buy_body("nope-" + uuid.uuid4().hex, "u"), None), 32, 2)
            sent += len(out)
            for st, _ in out:
                codes[st] = codes.get(st, 0) + 1
        assert set(codes) == {404}, codes
        after, vms_after = lua_mem()
        registry = {vm: (vms_before[vm]["registry"], b["registry"]) for vm, b in vms_after.items()}
        assert after < before + 2 * 1024 * 1024, "Lua memory grew from %d to %d bytes (by VM, after: %s; before: %s)" \
            % (before, after, vms_after, vms_before)
        # no lane outlives its take, and no registry reference leaks per request: the registry keeps its high-water
        # mark of references held at once (a few per request in flight), a leak would add one per request
        assert all(b["lanes"] == 0 for b in vms_after.values()), vms_after
        assert all(a < r + 1000 for r, a in registry.values()), "registry grew: %s" % registry
        mode = list(vms_after.values())[0]["coalesce"]
        print("     %s (coalesce %s): %d unknown items, live Lua memory %.1f MB → %.1f MB (both workers), "
              "registry entries %s" % (strategy, mode, sent, before / 1e6, after / 1e6, registry))
    os.unlink(conf.name)
    shutil.rmtree(d)


def test_unknown_items_flood_watch():
    unknown_flood("watch")


def test_unknown_items_flood_eval():
    unknown_flood("eval")


# ===== tombstones, expiring order keys, the sweeper, the audit =====

def order_message(item, oid, user, quantity=1):
    return json.dumps({"order_id": oid, "item_id": item, "user_id": user, "quantity": quantity,
                       "created_at": int(time.time() * 1000)})


def test_tombstone_skips_a_late_message_and_a_missing_key_is_persisted():
    d = lib.sale_scripts()
    try:
        with server("eval", scripts=d) as s:
            item = new_item(s, 100)
            dead, lost, marker = ("tomb-" + uuid.uuid4().hex, "lost-" + uuid.uuid4().hex, "mark-" + uuid.uuid4().hex)
            # a compensated order: its message reached Kafka after all (a delivery report that timed out)
            lib.redis_cli("HSET", "seckill:order:" + dead, "status", "compensated")
            missing_before = s.metric("seckilld_orders_without_redis_key_total")
            for oid in (dead, lost, marker):  # one key: one partition, in this order
                st, body = s.json("POST", "/_test/produce?key=same", order_message(item, oid, "late"))
                assert st == 200, body
            lib.wait_persisted([lost, marker], timeout=30)
            assert lib.persisted([dead]) == {}, "a compensated order was persisted"
            assert s.metric("seckilld_orders_without_redis_key_total") == missing_before + 2  # lost and marker
            # an order that reached MySQL: its hash says created and expires; GET /order falls back to MySQL
            st, body = s.json("POST", "/seckill/add", buy_body(item, "t-1"))
            assert st == 200, body
            oid = body["order_id"]
            lib.wait_persisted([oid], timeout=30)
            key = lib.order_key(oid)
            lib.wait_until(lambda: lib.redis_cli("HGET", key, "status") == "created", 10, what="created mark")
            ttl = int(lib.redis_cli("TTL", key))
            assert 0 < ttl <= 3600, ttl
            lib.redis_cli("DEL", key)
            st, body = s.json("GET", "/order/" + oid)
            assert st == 200 and body["order"]["status"] == "created", body
    finally:
        shutil.rmtree(d)


def test_poison_message_is_dead_lettered_and_the_sale_goes_on():
    d = lib.sale_scripts()
    try:
        with server("watch", scripts=d) as s:
            item = new_item(s, 100)
            before = s.metric("seckilld_kafka_dead_lettered_total")
            st, body = s.json("POST", "/_test/produce?key=p", "this is not an order")
            assert st == 200, body
            ok = {}
            for i in range(20):
                st, body = s.json("POST", "/seckill/add", buy_body(item, "p-%d" % i))
                assert st == 200, body
                ok[body["order_id"]] = 1
            lib.wait_persisted(ok, timeout=30)
            lib.wait_until(lambda: s.metric("seckilld_kafka_dead_lettered_total") == before + 1, 30,
                           what="the poison message in the dead-letter topic")
    finally:
        shutil.rmtree(d)


def test_sweeper_releases_an_order_that_never_reached_kafka():
    """a take whose compensation failed (Redis down at that moment) leaves an order queued with its stock held"""
    with server("eval") as s:
        item = new_item(s, 100)
        old = int(time.time() * 1000) - 120000
        stuck, done = lib.order_id(item, "stuck-" + uuid.uuid4().hex), lib.order_id(item, "done-" + uuid.uuid4().hex)
        for oid, user in ((stuck, "s-1"), (done, "s-2")):
            lib.redis_cli("HSET", lib.order_key(oid), "item_id", item, "user_id", user, "quantity", 1,
                          "status", "queued", "created_at", old)
            lib.redis_cli("ZADD", "seckill:{%s}:queued" % item, old, oid)
            lib.redis_cli("DECRBY", "seckill:{%s}:stock" % item, 1)
            lib.redis_cli("INCRBY", "seckill:{%s}:sold" % item, 1)
            lib.redis_cli("HINCRBY", "seckill:{%s}:users" % item, user, 1)
        # the second one did reach MySQL; only its "created" mark was lost
        lib.mysql_query("INSERT INTO orders (order_id, item_id, user_id, quantity, status, created_at) VALUES "
                        "('%s', '%s', 's-2', 1, 'created', NOW(3))" % (done, item))
        a = audit(s, item)
        assert a["redis"]["queued_orders"] == 2 and a["redis"]["sold"] == 2, a

        def settled():
            return lib.redis_cli("ZCARD", "seckill:{%s}:queued" % item) == "0"
        lib.wait_until(settled, 40, interval=0.5, what="the sweeper to settle both orders")
        assert lib.redis_cli("HGET", lib.order_key(stuck), "status") == "compensated"
        assert lib.redis_cli("HGET", lib.order_key(done), "status") == "created"
        v = item_view(s, item)
        assert v["stock_left"] == 99 and v["sold"] == 1 and v["orders_persisted"] == 1, v
        assert user_count(item, "s-1") == 0 and user_count(item, "s-2") == 1
        a = audit(s, item)
        assert a["drift"] == 0 and a["redis"]["queued_orders"] == 0, a
        assert s.metric('seckilld_books_drift_units{item="%s"}' % item) == 0


lib.main(globals())
