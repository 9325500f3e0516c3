"""Admission (API.md v1.1, issue 12): rate limits, signed purchase tokens, idempotent retries, /time — against the
shipped scripts, a real redis-server and mariadbd, and the embedded Kafka mock. Outcomes are counted in Redis and
MySQL, not only in answers."""
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid

import lib

SALE_CONF = os.path.join(lib.SCRIPTS, "sale.conf")
TOKEN = {"Authorization": "Bearer test-token"}
SHIPPED = os.path.join(lib.ROOT, "scripts")
SECRET = "test-secret-0123456789abcdef"
OTHER_SECRET = "another-secret-0123456789abcdef"


def conf(extra):
    """sale.conf with extra top-level Lua fields (a string such as 'limits = {...},')"""
    return lib.conf_plus(SALE_CONF, extra, "seckilld-adm-")


def server(extra="", strategy="watch", workers=2, env=None, scripts=SHIPPED, **kw):
    e = {"SECKILLD_STRATEGY": strategy}
    e.update(env or {})
    s = lib.Server(scripts, workers=workers, conf=conf(extra), env=e, wait_healthy=True, **kw)
    return s


def new_item(s, stock, limit=1, **extra):
    item = "adm-" + uuid.uuid4().hex[:12]
    status, r = s.json("PUT", "/admin/items/" + item, dict(stock=stock, limit_per_user=limit, **extra), TOKEN)
    assert status == 200, (status, r)
    return item


def sold(item):
    return int(lib.redis_cli("GET", "seckill:{%s}:sold" % item) or 0)


def bought(item, user):
    return int(lib.redis_cli("HGET", "seckill:{%s}:users" % item, user) or 0)


def buy(item, user, headers=None, **body):
    return ("POST", "/seckill/add", dict(item_id=item, user_id=user, **body), headers)


def count(results, status):
    return sum(1 for r in results if r[0] == status)


# ===== rate limits =====

def hammer_timed(port, make, connections, seconds):
    t0 = time.monotonic()
    out = lib.hammer(port, make, connections, seconds)
    return out, time.monotonic() - t0


def assert_rate(admitted, burst, rate, seconds, sent_s, what):
    """a token bucket admits its burst, then `rate` per second: ±1 per window, plus the loop's start-up slack.
    seconds: how long the hammer took, start-up and the last answers included (the most time tokens had to refill);
    sent_s: how long it sent requests (lib.hammer stops sending then; the last answers may take longer than the
    start-up slack on a loaded machine, and no request arrives meanwhile to take a refilled token)"""
    hi = burst + rate * seconds + 1
    lo = burst + rate * (min(seconds, sent_s) - 0.5) - 1
    assert lo <= admitted <= hi, "%s: %d admitted in %.2f s, expected %d..%d" % (what, admitted, seconds, lo, hi)


def test_user_limit_holds_across_workers_and_spares_other_users():
    with server("limits = { user = { rate = 5, burst = 5 } },", workers=2) as s:
        item = new_item(s, 10 ** 6, limit=10 ** 6)
        other = []

        def calm_user():  # another user buying twice a second is never refused
            for i in range(6):
                other.append(s.json("POST", "/seckill/add", {"item_id": item, "user_id": "calm"})[0])
                time.sleep(0.5)
        t = threading.Thread(target=calm_user)
        t.start()
        out, secs = hammer_timed(s.port, lambda n: buy(item, "greedy"), 16, 3.0)
        t.join()
        admitted = count(out, 200)
        assert_rate(admitted, 5, 5, secs, 3.0, "user limit 5/s burst 5 over 2 workers")
        assert count(out, 429) > 100 and count(out, 200) + count(out, 429) == len(out), \
            {st: count(out, st) for st in set(r[0] for r in out)}
        assert other == [200] * 6, other
        # the outcome in Redis: exactly the admitted buys took stock
        assert bought(item, "greedy") == admitted and sold(item) == admitted + 6
        status, hdrs, body = s.request("POST", "/seckill/add", json.dumps({"item_id": item, "user_id": "greedy"}))
        for _ in range(20):
            if status == 429:
                break
            status, hdrs, body = s.request("POST", "/seckill/add", json.dumps({"item_id": item, "user_id": "greedy"}))
        b = json.loads(body)
        assert status == 429 and b["error"] == "busy" and b["limit"] == "user", (status, b)
        assert int(hdrs["retry-after"]) >= 1, hdrs
        m = s.metrics()
        assert m.get('seckilld_admission_refused_total{limit="user"}', 0) >= count(out, 429), m
        lib.wait_persisted([json.loads(b)["order_id"] for st, b in out if st == 200])


def test_ip_limit_per_client_behind_trusted_proxy():
    extra = 'limits = { ip = { rate = 5, burst = 5 }, trusted_proxies = { "127.0.0.1" } },'
    with server(extra) as s:
        item = new_item(s, 10 ** 6, limit=10 ** 6)
        n = [0]

        def make(i):
            n[0] += 1
            return buy(item, "u%d" % n[0], {"X-Forwarded-For": "203.0.113.9, 198.51.100.7"})
        out, secs = hammer_timed(s.port, make, 16, 2.0)
        assert_rate(count(out, 200), 5, 5, secs, 2.0, "ip limit for 198.51.100.7")
        assert all(json.loads(b)["limit"] == "ip" for st, b in out if st == 429)
        # another client behind the same proxy has its own bucket
        st, b = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "x1"}, {"X-Forwarded-For": "198.51.100.8"})
        assert st == 200, (st, b)
        assert sold(item) == count(out, 200) + 1
    # without trusted proxies the header is ignored: every request is the peer's
    with server("limits = { ip = { rate = 2, burst = 2 } },") as s:
        item = new_item(s, 100, limit=100)
        res = [s.json("POST", "/seckill/add", {"item_id": item, "user_id": "v%d" % i},
                      {"X-Forwarded-For": "198.51.100.%d" % i})[0] for i in range(4)]
        assert res[:2] == [200, 200] and 429 in res[2:], res


def test_item_max_rps_from_the_admin_route():
    with server() as s:
        item = new_item(s, 10 ** 6, limit=10 ** 6, max_rps=10)
        st, v = s.json("GET", "/admin/items/" + item, None, TOKEN)
        assert v["item"]["max_rps"] == 10 and "require_token" not in v["item"], v
        n = [0]

        def make(i):
            n[0] += 1
            return buy(item, "m%d-%d" % (n[0], i))
        out, secs = hammer_timed(s.port, make, 16, 2.0)
        assert_rate(count(out, 200), 10, 10, secs, 2.0, "item max_rps 10")
        assert all(json.loads(b)["limit"] == "item" for st, b in out if st == 429)
        assert sold(item) == count(out, 200)


def test_a_refusal_does_not_wait_for_a_stalled_redis():
    # a refusal that needs no Redis command (over the item's max_rps) is answered from the item's settings this
    # process read, also once they are past their second: they are read again in the background, so a Redis that
    # stalls (DEBUG SLEEP: no answer to anyone) does not stall the refusals
    assert not lib.CLUSTER, "one redis-server to put to sleep"
    with server(workers=1) as s:
        item = new_item(s, 10 ** 6, limit=10 ** 6, max_rps=0.001)
        assert s.json(*buy(item, "first"))[0] == 200  # the item's one token
        assert s.json(*buy(item, "second"))[0] == 429  # and its settings read
        time.sleep(1.2)  # past the second the settings are trusted for: the next buy reads them again
        woke = threading.Event()

        def stall():
            lib.redis_cli("DEBUG", "SLEEP", "4")
            woke.set()
        t = threading.Thread(target=stall)
        t.start()
        # Redis is asleep once a PING goes unanswered (or the test proves nothing)
        with socket.create_connection(("127.0.0.1", int(os.environ["SK_REDIS_PORT"]))) as c:
            lib.wait_until(lambda: _ping_unanswered(c), 10, what="redis asleep")
        answers = [s.json(*buy(item, "during-%d" % i)) for i in range(20)]
        asleep = not woke.is_set()
        t.join()
        assert all(st == 429 and b["error"] == "busy" for st, b in answers), answers
        assert asleep, "the refusals waited for Redis to wake"
        assert sold(item) == 1


def _ping_unanswered(c):
    c.settimeout(0.5)
    c.sendall(b"PING\r\n")
    try:
        c.recv(64)
        return False
    except socket.timeout:
        return True


def test_redis_scope_holds_across_two_processes():
    extra = 'limits = { scope = "redis", user = { rate = 5, burst = 5 } },'
    with server(extra, workers=1) as a, server(extra, workers=1) as b:
        item = new_item(a, 10 ** 6, limit=10 ** 6)
        user = "shared-" + uuid.uuid4().hex[:8]
        outs = {}

        def run(s):
            outs[s.port] = hammer_timed(s.port, lambda n: buy(item, user), 8, 3.0)
        ts = [threading.Thread(target=run, args=(s,)) for s in (a, b)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        admitted = sum(count(o, 200) for o, _ in outs.values())
        secs = max(t for _, t in outs.values())
        assert_rate(admitted, 5, 5, secs, 3.0, "redis-scope user limit over two processes")
        assert all(count(o, 200) > 0 for o, _ in outs.values()), "both processes admit"
        assert bought(item, user) == admitted


# ===== purchase tokens =====

def mint(secret, item, user, expires_at):
    mac = hmac.new(secret.encode(), ("v1|%s|%s|%d" % (item, user, expires_at)).encode(), hashlib.sha256).hexdigest()
    return "v1.%d.%s" % (expires_at, mac)


def test_tokens_every_bad_token_is_refused_and_takes_nothing():
    for strategy in ("watch", "eval"):
        with server('token_secret = "%s",' % SECRET, strategy=strategy) as s:
            item = new_item(s, 10, require_token=True, token_ttl_ms=5000)
            st, r = s.json("POST", "/seckill/token", {"item_id": item, "user_id": "alice"})
            assert st == 200 and r["ok"] is True and r["expires_at"] > time.time() * 1000, (st, r)
            good = r["token"]
            assert good == mint(SECRET, item, "alice", r["expires_at"]), "the token is the documented HMAC"
            later = int(time.time() * 1000) + 60000
            bad = {
                "missing": None,
                "garbage": "not a token",
                "truncated": good[:-3],
                "bit-flipped": good[:-1] + ("0" if good[-1] != "0" else "1"),
                "expired": mint(SECRET, item, "alice", int(time.time() * 1000) - 1),
                "other user's": mint(SECRET, item, "bob", later),
                "other item's": mint(SECRET, "other-item", "alice", later),
                "other secret": mint(OTHER_SECRET, item, "alice", later),
                "number": 12345,
            }
            for why, tok in bad.items():
                body = {"item_id": item, "user_id": "alice"}
                if tok is not None:
                    body["token"] = tok
                st, r = s.json("POST", "/seckill/add", body)
                assert st == 403 and r["error"] == "bad_token", (strategy, why, st, r)
            assert sold(item) == 0 and bought(item, "alice") == 0, "a refused token took stock"
            st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "alice", "token": good})
            assert st == 200 and r["status"] == "queued", (st, r)
            assert sold(item) == 1 and bought(item, "alice") == 1
            # the user holds the limit now: no more tokens
            st, r = s.json("POST", "/seckill/token", {"item_id": item, "user_id": "alice"})
            assert st == 409 and r["error"] == "limit_exceeded", (st, r)
            m = s.metrics()
            assert m.get("seckilld_tokens_issued_total", 0) == 1, m
            assert sum(v for k, v in m.items() if k.startswith("seckilld_tokens_refused_total")) == len(bad), m


def test_token_endpoint_window_unknown_and_unconfigured():
    with server('token_secret = "%s",' % SECRET) as s:
        now = int(time.time() * 1000)
        early = new_item(s, 5, starts_at=now + 3600000, require_token=True)
        st, r = s.json("POST", "/seckill/token", {"item_id": early, "user_id": "u"})
        assert st == 403 and r["error"] == "not_started" and r["starts_at"] == now + 3600000, (st, r)
        assert abs(r["now"] - time.time() * 1000) < 5000, r
        done = new_item(s, 5, starts_at=now - 7200000, ends_at=now - 3600000, require_token=True)
        st, r = s.json("POST", "/seckill/token", {"item_id": done, "user_id": "u"})
        assert st == 403 and r["error"] == "ended", (st, r)
        st, r = s.json("POST", "/seckill/token", {"item_id": "no-such-" + uuid.uuid4().hex[:6], "user_id": "u"})
        assert st == 404 and r["error"] == "unknown_item", (st, r)
        st, r = s.json("POST", "/seckill/token", {"item_id": early})
        assert st == 400 and r["error"] == "bad_request", (st, r)
        # a buy of an item not yet on sale says when it starts, by the server's clock
        st, r = s.json("POST", "/seckill/add", {"item_id": early, "user_id": "u", "token": "x"})
        assert st == 403 and r["error"] in ("not_started", "bad_token"), (st, r)
        plain = new_item(s, 5, starts_at=now + 3600000)
        st, r = s.json("POST", "/seckill/add", {"item_id": plain, "user_id": "u"})
        assert st == 403 and r["error"] == "not_started" and r["starts_at"] == now + 3600000 and "now" in r, (st, r)
        st, r = s.json("GET", "/time")
        assert st == 200 and r["ok"] is True and abs(r["now"] - time.time() * 1000) < 5000, (st, r)
    with server() as s:  # no secret: no token-requiring items, no tokens
        st, r = s.json("PUT", "/admin/items/adm-x" + uuid.uuid4().hex[:6], {"stock": 1, "require_token": True}, TOKEN)
        assert st == 400 and "token_secret" in r["message"], (st, r)
        st, r = s.json("POST", "/seckill/token", {"item_id": "demo", "user_id": "u"})
        assert st == 503, (st, r)


def test_previous_secret_accepted_only_during_the_overlap():
    until = int(time.time() * 1000) + 15000  # room for a start-up and one buy on a loaded machine
    extra = 'token_secret = "%s", token_secret_previous = "%s", token_secret_previous_until = %d,' % (
        SECRET, OTHER_SECRET, until)
    with server(extra) as s:
        item = new_item(s, 10, require_token=True)
        later = int(time.time() * 1000) + 60000
        st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "p1",
                                                "token": mint(OTHER_SECRET, item, "p1", later)})
        assert st == 200, ("previous secret within the overlap", st, r)
        time.sleep(max(0, until / 1000 - time.time()) + 0.2)
        st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "p2",
                                                "token": mint(OTHER_SECRET, item, "p2", later)})
        assert st == 403 and r["error"] == "bad_token", ("previous secret after the overlap", st, r)
        st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "p3",
                                                "token": mint(SECRET, item, "p3", later)})
        assert st == 200, (st, r)
        assert sold(item) == 2


def test_check_refuses_token_items_without_a_secret():
    # sale.conf has items = {}: replace it (a second items key would silently win)
    path = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False).name
    with open(SALE_CONF) as f:
        text = f.read().replace("items = {},", 'items = { { id = "t1", stock = 5, require_token = true } },')
    with open(path, "w") as f:
        f.write(text)
    r = subprocess.run([lib.BINARY, "-c", path, "-t"], cwd=lib.ROOT, capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, SECKILLD_SCRIPTS=SHIPPED))
    assert r.returncode == 1 and "token_secret" in (r.stdout + r.stderr), (r.returncode, r.stdout, r.stderr)
    r = subprocess.run([lib.BINARY, "-c", path, "-t"], cwd=lib.ROOT, capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, SECKILLD_SCRIPTS=SHIPPED, SECKILLD_TOKEN_SECRET=SECRET))
    assert r.returncode == 0, (r.stdout, r.stderr)
    os.unlink(path)


# ===== idempotent retries =====

def test_same_key_in_parallel_makes_one_order():
    for strategy in ("watch", "eval"):
        with server(strategy=strategy) as s:
            item = new_item(s, 10, limit=3)
            run = uuid.uuid4().hex[:10]  # a key is the user's for 24 h: unique per run
            key = {"Idempotency-Key": "retry-" + run}
            out = lib.run_concurrently(s.port, [buy(item, "ida", key)] * 20, 20)
            oks = [json.loads(b) for st, b, _ in out if st == 200]
            busy = [json.loads(b) for st, b, _ in out if st == 409]
            assert len(oks) + len(busy) == 20 and oks, [(st, b) for st, b, _ in out]
            assert all(b["error"] == "in_progress" for b in busy), busy
            assert len({json.dumps(b, sort_keys=True) for b in oks}) == 1, "replays differ"
            bodies = {b for st, b, _ in out if st == 200}
            assert len(bodies) == 1, "replays are not byte for byte the first answer: %r" % bodies
            assert sold(item) == 1 and bought(item, "ida") == 1, (strategy, sold(item))
            # later repeats replay the same answer, marked as such
            st, hdrs, body = s.request("POST", "/seckill/add", json.dumps({"item_id": item, "user_id": "ida"}), key)
            assert st == 200 and body in bodies and hdrs.get("idempotent-replayed") == "true", (st, hdrs, body)
            assert hdrs["content-type"].startswith("application/json"), hdrs
            # the same key with another body
            st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "ida", "quantity": 2}, key)
            assert st == 422 and r["error"] == "idempotency_mismatch", (st, r)
            # another key of the same user is another order
            st, k2 = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "ida"}, {"Idempotency-Key": "k2-" + run})
            assert st == 200 and k2["order_id"] != oks[0]["order_id"], (st, k2)
            # a refusal is an answer too, and is replayed
            st1, r1 = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "ida", "quantity": 5},
                             {"Idempotency-Key": "k3-" + run})
            st2, r2 = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "ida", "quantity": 5},
                             {"Idempotency-Key": "k3-" + run})
            assert st1 == st2 == 400 and r1 == r2, (st1, r1, st2, r2)
            st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "ida"}, {"Idempotency-Key": "bad key!"})
            assert st == 400, (st, r)
            assert sold(item) == 2
            lib.wait_persisted([oks[0]["order_id"], k2["order_id"]])
            assert s.metric("seckilld_idempotent_replays_total") >= 1


def test_kill_after_the_take_then_retry_gets_the_same_order():
    """kill -9 while the first request waits for Kafka (after its take): the retry on the restarted server finds the
    order its key took, puts it on Kafka and answers it; MySQL gets it once and no second unit is taken"""
    scripts = lib.sale_scripts()
    env = {"SECKILLD_DEADLINE_MS": "2000"}  # the lease: deadline + message.timeout.ms (2.5 s) + 2 s = 6.5 s
    s = server(scripts=scripts, env=env, workers=1)
    try:
        item = new_item(s, 10)
        st, r = s.json("POST", "/_test/kafka/down")
        assert st == 200, (st, r)
        key = {"Idempotency-Key": "crash-" + uuid.uuid4().hex[:8]}
        first = threading.Thread(target=lambda: _ignore(lambda: s.request(
            "POST", "/seckill/add", json.dumps({"item_id": item, "user_id": "kim"}), key, timeout=10)))
        first.start()
        lib.wait_until(lambda: sold(item) == 1, 5, what="the first request's take")
        queued = lib.redis_cli("ZRANGE", "seckill:{%s}:queued" % item, 0, -1).split()
        assert len(queued) == 1, queued
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait()
        first.join()
        s.start(wait_healthy=True)
        t0 = time.time()
        while True:
            st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "kim"}, key)
            if st != 409:
                break
            assert r["error"] == "in_progress" and time.time() - t0 < 60, (st, r)  # only catches a lease never freed
            time.sleep(0.5)
        assert st == 200 and r["order_id"] == queued[0], (st, r, queued)
        assert sold(item) == 1 and bought(item, "kim") == 1
        lib.wait_persisted([queued[0]])
        st, r2 = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "kim"}, key)
        assert st == 200 and r2 == r, (st, r2)
        rows = lib.mysql_query("SELECT COUNT(*), COALESCE(SUM(quantity), 0) FROM orders WHERE item_id = '%s'" % item)
        assert rows == [["1", "1"]], rows
    finally:
        s.stop(signal.SIGKILL)
        os.unlink(s.logfile.name)


def test_access_log_names_item_user_and_order_of_a_buy():
    path = tempfile.mktemp(prefix="sk-access-", suffix=".log")
    try:
        with server("access_log = %r," % path) as s:
            item = new_item(s, 5)
            st, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "acc"}, {"X-Request-Id": "buy-1"})
            assert st == 200, (st, r)
            st, _ = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "acc"}, {"X-Request-Id": "buy-2"})
            assert st == 409
        with open(path) as f:
            lines = {l.split(" req=")[1].split(":")[0]: l for l in f.read().splitlines() if " req=buy-" in l}
        assert lines["buy-1"].endswith("status=200 latency_ms=%s item_id=%s user_id=acc order_id=%s"
                                       % (lines["buy-1"].split("latency_ms=")[1].split()[0], item, r["order_id"])), lines
        assert "status=409" in lines["buy-2"] and "item_id=%s user_id=acc" % item in lines["buy-2"], lines
        assert "order_id" not in lines["buy-2"], lines
    finally:
        if os.path.exists(path):
            os.unlink(path)


def _ignore(fn):
    try:
        fn()
    except Exception:
        pass


lib.main(globals())
