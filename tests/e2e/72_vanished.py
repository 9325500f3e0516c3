"""Items that cannot silently vanish (issue 20, item 3), with the shipped config and scripts (only addresses overridden):
an item MySQL knows whose keys are gone from Redis while the epoch stayed (a key deleted by hand, evicted, lost with
a partial restore) is paused and rebuilt from MySQL by the loss watcher (books/loss.lua), never answered 404 as if it
never existed, at start-up as well as while serving; and a Redis whose maxmemory-policy may evict the sale's keys is
reported in /healthz, in /metrics and in the log."""
import json
import os
import re
import subprocess
import threading
import time
import uuid

import lib

SHIPPED = os.path.join(lib.ROOT, "scripts")
CONF = os.path.join(lib.ROOT, "conf", "seckilld.conf")
TOKEN = {"Authorization": "Bearer change-me"}
# what a rebuild and a policy change are expected to log
ALLOWED = [r"rebuil", r"paused", r"gone from Redis", r"maxmemory-policy"]


def server(strategy="watch", conf=CONF, workers=2):
    s = lib.Server(SHIPPED, workers=workers, conf=conf, env={"SECKILLD_STRATEGY": strategy}, wait_healthy=True)
    s.allowed_errors = ALLOWED
    return s


def keys_of(item):
    return ["seckill:{%s}:%s" % (item, k) for k in ("meta", "stock", "sold", "users", "queued", "parts")]


def buy(s, item, user, quantity=1):
    st, body = s.json("POST", "/seckill/add", {"item_id": item, "user_id": user, "quantity": quantity})
    return st, body


def meta(item, field):
    return lib.redis_cli("HGET", "seckill:{%s}:meta" % item, field)


def rebuilt(item):
    """the item is back on Redis's books: its meta without the rebuilding flag, and its stock"""
    return meta(item, "armed_at") != "" and meta(item, "rebuilding") == "" and \
        lib.redis_cli("EXISTS", "seckill:{%s}:stock" % item) == "1"


def mysql_units(item):
    rows = lib.mysql_query("SELECT COALESCE(SUM(quantity), 0), COUNT(*) FROM orders WHERE item_id = '%s'" % item)
    return int(rows[0][0]), int(rows[0][1])


def sell_out(s, item, prefix, n):
    """n fresh buyers, 16 at a time: every answer is 200 or sold_out; returns {order_id: quantity} of the 200s"""
    return lib.buy_out(s.port, item, prefix, n, 16)


# ===== keys deleted while serving: the watcher rebuilds the item =====

def vanished_while_serving(strategy, what):
    stock = 40
    with server(strategy) as s:
        item = "vn-" + uuid.uuid4().hex[:12]
        st, r = s.json("PUT", "/admin/items/" + item, {"stock": stock, "limit_per_user": 2}, TOKEN)
        assert st == 200, (st, r)
        # before: 6 buyers of one unit, 2 of two (their limit)
        ok = {}
        for user, q in [("one-%d" % i, 1) for i in range(6)] + [("two-%d" % i, 2) for i in range(2)]:
            st, body = buy(s, item, user, q)
            assert st == 200, (st, body)
            ok[body["order_id"]] = q
        before = sum(ok.values())
        lib.wait_persisted(ok, timeout=30)
        vanished_before = s.metric("seckilld_books_vanished_items_total")
        # the keys go by hand; the epoch stays
        epoch = lib.redis_cli("GET", "seckill:epoch")
        assert epoch != ""
        lib.redis_cli("DEL", *(keys_of(item)[:1] if what == "meta" else keys_of(item)))
        assert lib.redis_cli("GET", "seckill:epoch") == epoch
        # at once (before the watcher may have seen it): 503, the item is being rebuilt; never 404
        st, body = buy(s, item, "early")
        assert (st, body["error"]) == (503, "unavailable"), (st, body)
        # the watcher pauses it (its meta back, flagged) and rebuilds it from MySQL; meanwhile buys are 503 only
        answers = []

        def back():
            answers.append(buy(s, item, "window-%d" % len(answers)))
            return rebuilt(item)
        lib.wait_until(back, 90, interval=0.2, what="the item to be rebuilt")
        statuses = {st for st, _ in answers[:-1]}
        assert statuses <= {503}, [(st, b) for st, b in answers if st != 503][:3]
        assert all(b["error"] == "unavailable" for st, b in answers[:-1]), answers[:3]
        if answers[-1][0] == 200:  # the look that found it rebuilt bought a unit after it
            ok[answers[-1][1]["order_id"]] = 1
        assert s.metric("seckilld_books_vanished_items_total") >= vanished_before + 1
        assert "gone from Redis" in s.log(), s.log()[-2000:]
        # rebuilt from MySQL: sold, stock and every buyer's count
        assert int(lib.redis_cli("GET", "seckill:{%s}:sold" % item)) == sum(ok.values())
        assert int(lib.redis_cli("GET", "seckill:{%s}:stock" % item)) == stock - sum(ok.values())
        for i in range(6):
            assert lib.redis_cli("HGET", "seckill:{%s}:users" % item, "one-%d" % i) == "1", i
        for i in range(2):
            assert lib.redis_cli("HGET", "seckill:{%s}:users" % item, "two-%d" % i) == "2", i
        st, r = s.json("GET", "/admin/items/" + item, None, TOKEN)
        assert st == 200 and r["item"]["sold"] == sum(ok.values()) and r["item"]["stock_initial"] == stock, (st, r)
        # the limit held across the loss
        st, body = buy(s, item, "two-0")
        assert (st, body["error"]) == (409, "limit_exceeded"), (st, body)
        st, body = buy(s, item, "one-0")
        assert st == 200, (st, body)
        ok[body["order_id"]] = 1
        # and the rest sells exactly: no unit sold twice
        rest = sell_out(s, item, "after", stock + 10)
        ok.update(rest)
        assert sum(ok.values()) == stock, (sum(ok.values()), stock, before, len(rest))
        assert lib.redis_cli("GET", "seckill:{%s}:stock" % item) == "0"
        assert lib.redis_cli("GET", "seckill:{%s}:sold" % item) == str(stock)
        lib.wait_persisted(ok, timeout=60)
        assert mysql_units(item) == (stock, len(ok)), (mysql_units(item), stock, len(ok))
        lib.wait_until(lambda: s.json("GET", "/admin/items/%s/audit" % item, None, TOKEN)[1]["audit"]["drift"] == 0,
                       30, what="no drift")
        print("     %s, %s deleted: %d units before, %d answers in the window (all 503), rebuilt, sold out exactly"
              % (strategy, what, before, len(answers) - 1))


@lib.normal_only("script behaviour (books/loss.lua); its C paths run under ASan in 70_books and 60_sale")
def test_meta_deleted_watch():
    vanished_while_serving("watch", "meta")


@lib.normal_only("script behaviour (books/loss.lua); its C paths run under ASan in 70_books and 60_sale")
def test_all_keys_deleted_eval():
    vanished_while_serving("eval", "all")


@lib.normal_only("script behaviour (books/loss.lua)")
def test_vanished_item_found_without_a_request():
    """nobody asks for the item: the watcher's round over MySQL's items finds it all the same"""
    with server() as s:
        item = "vq-" + uuid.uuid4().hex[:12]
        st, r = s.json("PUT", "/admin/items/" + item, {"stock": 7, "limit_per_user": 1}, TOKEN)
        assert st == 200, (st, r)
        st, body = buy(s, item, "a")
        assert st == 200, (st, body)
        lib.wait_persisted([body["order_id"]], timeout=30)
        lib.redis_cli("DEL", *keys_of(item))
        lib.wait_until(lambda: meta(item, "armed_at") != "", 60, interval=0.2, what="the item paused by the watcher")
        lib.wait_until(lambda: rebuilt(item), 90, interval=0.2, what="the item rebuilt")
        assert lib.redis_cli("GET", "seckill:{%s}:stock" % item) == "6"
        assert lib.redis_cli("HGET", "seckill:{%s}:users" % item, "a") == "1"


def test_made_up_items_stay_404():
    """the list of known items is MySQL's: an id nobody set up is still unknown, and costs no MySQL query"""
    with server() as s:
        for i in range(20):
            item = "nobody-" + uuid.uuid4().hex[:12]
            st, body = buy(s, item, "u")
            assert (st, body["error"]) == (404, "unknown_item"), (st, body)
            st, body = s.json("GET", "/admin/items/" + item, None, TOKEN)
            assert (st, body["error"]) == (404, "unknown_item"), (st, body)


def test_made_up_ids_cost_no_redis_command_and_a_new_item_is_known_everywhere():
    """every process lists the items (common/items.lua): a flood of made-up ids reaches no Redis command; an item set
    up through one process is sold at once through another"""
    with server() as a, server() as b:
        prefix = "bot-" + uuid.uuid4().hex[:8]
        port = os.environ["SECKILLD_REDIS"].rsplit(":", 1)[-1].split("/")[0]
        # the list is read within 100 ms of the start; a buy of a real item proves the process is serving
        lib.wait_until(lambda: buy(a, prefix + "-warm", "u")[0] == 404 and buy(b, prefix + "-warm", "u")[0] == 404, 10,
                       what="both processes serving")
        time.sleep(0.5)
        monitor = subprocess.Popen(["redis-cli", "-p", port, "monitor"], stdout=subprocess.PIPE, text=True)
        seen = []  # the monitor's lines that name this test's ids (the other tasks' commands are many)
        reader = threading.Thread(target=lambda: seen.extend(l for l in monitor.stdout if prefix in l), daemon=True)
        reader.start()
        try:
            time.sleep(0.3)
            reqs = [("POST", "/seckill/add", {"item_id": "%s-%d" % (prefix, i), "user_id": "u"}, None)
                    for i in range(2000)]
            for srv in (a, b):
                for st, body, _ in lib.run_concurrently(srv.port, reqs, 16):
                    assert st == 404 and json.loads(body)["error"] == "unknown_item", (st, body)
            # a new item, set up through a, is sold through b as soon as the set-up answered
            item = prefix + "-real"
            assert a.json("PUT", "/admin/items/" + item, {"stock": 3}, TOKEN)[0] == 200
            st, body = buy(b, item, "first")
            assert st == 200, (st, body)
            # the monitor is behind the commands it shows: once it shows the real item's, it has shown the flood's
            lib.wait_until(lambda: any(item in l for l in list(seen)), 30, what="the monitor to show the real item")
        finally:
            monitor.terminate()
            monitor.wait()
        asked = [l for l in seen if prefix + "-real" not in l]
        assert asked == [], "made-up ids reached Redis: %d commands, e.g. %s" % (len(asked), asked[:3])


# ===== at start-up: an item of the config known to MySQL, missing in Redis =====

@lib.normal_only("script behaviour (app.lua's start-up items, books/loss.lua)")
def test_configured_item_missing_in_redis_is_rebuilt_at_start():
    item = "vs-" + uuid.uuid4().hex[:12]
    conf = os.path.join(lib.ROOT, "build", "seckilld-vanished-%s.conf" % item)
    with open(CONF) as f:
        text = f.read()
    text, n = re.subn(r'\{ id = "demo", stock = 100, limit_per_user = 1 \}',
                      '{ id = "%s", stock = 5, limit_per_user = 1 }' % item, text)
    assert n == 1, "the shipped config's items changed: adapt this test"
    with open(conf, "w") as f:
        f.write(text)
    try:
        with server(conf=conf) as s:  # set up from the config
            lib.wait_until(lambda: meta(item, "stock_initial") == "5", 30, what="the config's item set up")
            ok = {}
            for user in ("a", "b"):
                st, body = buy(s, item, user)
                assert st == 200, (st, body)
                ok[body["order_id"]] = 1
            lib.wait_persisted(ok, timeout=30)
        lib.redis_cli("DEL", *keys_of(item))  # gone from Redis, the epoch intact
        assert lib.redis_cli("GET", "seckill:epoch") != ""
        # as if set up a minute ago (an item set up seconds ago is left to the watcher: its set-up may be under way)
        lib.mysql_query("UPDATE items SET armed_at = armed_at - 60000 WHERE item_id = '%s'" % item)
        with server(conf=conf) as s:
            # start-up finds it known to MySQL and missing in Redis: paused at once (no request needed), then rebuilt
            lib.wait_until(lambda: meta(item, "armed_at") != "", 30, what="the item paused at start-up")
            # the repair logs the item once its marks are stamped (books/vanished.lua: a Redis call after the meta is
            # written): wait for the line, then see that it came before app.init ended
            gone = r"item\(s\) .*%s.* known to MySQL but gone from Redis" % item
            try:
                lib.wait_until(lambda: re.search(gone, s.log()), 30, what="the item logged as gone from Redis")
            except AssertionError:
                raise AssertionError(s.log()[-3000:])
            before_init_done = s.log().split("app.init done")[0]
            assert re.search(gone, before_init_done), s.log()[-3000:]
            lib.wait_until(lambda: rebuilt(item), 90, interval=0.2, what="the item rebuilt")
            st, r = s.json("GET", "/admin/items/" + item, None, TOKEN)
            assert st == 200 and r["item"]["stock_left"] == 3 and r["item"]["sold"] == 2, (st, r)
            for user in ("a", "b"):
                st, body = buy(s, item, user)
                assert (st, body["error"]) == (409, "limit_exceeded"), (st, body)
            got = sell_out(s, item, "late", 10)
            ok.update(got)
            assert len(got) == 3 and sum(ok.values()) == 5, got
            lib.wait_persisted(ok, timeout=30)
            assert mysql_units(item) == (5, 5)
            assert "gone from Redis" in s.log(), s.log()[-2000:]
    finally:
        os.unlink(conf)


# ===== a maxmemory-policy that may evict the sale's keys =====

def health(s):
    st, body = s.json("GET", "/healthz")
    return st, body


def test_eviction_policy_is_reported():
    was = lib.redis_cli("CONFIG", "GET", "maxmemory-policy").splitlines()[1]
    try:
        lib.redis_cli("CONFIG", "SET", "maxmemory-policy", "allkeys-lru")
        with server() as s:
            s.allowed_errors = ALLOWED
            # checked at start-up: /healthz keeps its 200 (the backends are up) and says so; the gauge is 1
            lib.wait_until(lambda: health(s)[1].get("redis_eviction") == "unsafe", 30, what="/healthz to say unsafe")
            st, body = health(s)
            assert st == 200 and body["ok"] is True, (st, body)
            assert "allkeys-lru" in body["redis_eviction_error"] and "noeviction" in body["redis_eviction_error"], body
            assert s.metric("seckilld_redis_eviction_policy_unsafe") == 1
            # (books/eviction.lua notes /healthz first, then logs: wait for the line)
            try:
                lib.wait_until(lambda: re.search(r"\[error\].*maxmemory-policy.*allkeys-lru", s.log()), 10,
                               what="the unsafe policy in the log")
            except AssertionError:
                raise AssertionError(s.log()[-2000:])
            # put back: seen within a check (every 10 s)
            lib.redis_cli("CONFIG", "SET", "maxmemory-policy", "noeviction")
            lib.wait_until(lambda: health(s)[1].get("redis_eviction") == "ok", 60, what="/healthz to say ok")
            st, body = health(s)
            assert st == 200 and "redis_eviction_error" not in body, body
            assert s.metric("seckilld_redis_eviction_policy_unsafe") == 0
    finally:
        lib.redis_cli("CONFIG", "SET", "maxmemory-policy", was)
    assert lib.redis_cli("CONFIG", "GET", "maxmemory-policy").splitlines()[1] == was


lib.main(globals())
