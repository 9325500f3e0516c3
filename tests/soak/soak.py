"""make soak (issue 20 item 5): seckilld under a steady, paced mix of traffic for SOAK_SECONDS (default 1800) against
the shipped config and scripts (only the addresses and the token secret overridden through SECKILLD_*, as
tests/e2e/70_books.py does), with SIGHUP every 30 s. Every few seconds it samples seckilld's RSS (/proc/PID/status
VmRSS) and the Lua memory (seckilld_lua_memory_bytes summed over the workers, from /metrics) into a CSV under
build/soak/; after the warm-up it fits a least-squares line to each and fails when

    RSS grows >= SOAK_RSS_MIB_H (8) MiB/h, Lua memory >= SOAK_LUA_MIB_H (2) MiB/h,
    any answer is 5xx or no answer at all, an answer is outside what its kind may get, an Idempotency-Key replay
    differs from the first answer, the log has an [error] line (a Lua error among them), or an order answered 200
    is not in MySQL's orders table exactly once (or MySQL has an order of the soak's items nobody was answered).

The traffic (a pacer in one asyncio loop, SOAK_CONNECTIONS keep-alive connections to 127.0.0.1, SOAK_RATE requests/s
in all, bounded by count and time), by share of the requests:
    buy      buys of a big item by fresh users (200)
    soldout  buys of an item sold out at the start (409 sold_out)
    unknown  buys of random, never set-up item ids (404 unknown_item)
    bad      malformed bodies: broken JSON, a missing user, a bad quantity (400)
    lookup   GET /order/<id> of an accepted order (200) or of a made-up id (404)
    token    POST /seckill/token then the buy with it on an item that requires tokens (200, 200), now and then a
             buy with a forged token (403 bad_token)
    idem     buys with an Idempotency-Key, a third of them repeats of an earlier key (200, the same order_id,
             Idempotent-Replayed: true)

Environment: the harness's (SECKILLD_REDIS, SECKILLD_MYSQL, SK_MYSQL_PORT: source DIR/env of services.sh), and
SOAK_SECONDS, SOAK_RATE (1800), SOAK_CONNECTIONS (8), SOAK_SAMPLE_S (5), SOAK_WARMUP_S (20 % of the run, at least 120 s, at most half),
SOAK_HUP_S (30), SOAK_RSS_MIB_H (8), SOAK_LUA_MIB_H (2), SOAK_CSV (build/soak/soak-<time>.csv), SOAK_WORKERS (the
config's: one per core), SOAK_KEEP_LOG=1 (keep seckilld's log, printed path), SOAK_KAFKA: `standalone` (default)
or `embedded`.

Kafka: by default the orders topic lives on a standalone librdkafka mock process (`seckilld --kafka-mock`, the
config's 24 partitions; SECKILLD_KAFKA names it, an address override), outside seckilld as a real cluster is: the mock
keeps the newest 5 MB of each partition (README "Kafka"), which in seckilld's own process (the shipped `embedded`
default) grows RSS with every accepted order until 24 x 5 MB are held, and that is the broker's log, not seckilld's
memory. The mock process's RSS is sampled too (column mock_rss_kib) and printed, not bounded. SOAK_KAFKA=embedded
runs the config's embedded mock instead; then RSS includes the mock's log and the bound is not expected to hold
until it is full (README "Soak"). MALLOC_CONF passes to seckilld
(jemalloc), e.g. MALLOC_CONF=stats_print:true prints the allocator's statistics into the log at exit.
"""
import asyncio
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "e2e"))
import lib  # noqa: E402

SHIPPED = os.path.join(lib.ROOT, "scripts")
CONF = os.path.join(lib.ROOT, "conf", "seckilld.conf")
ADMIN = {"Authorization": "Bearer change-me"}  # the shipped config's token (accepted on loopback only)
MOCK = None  # SOAK_KAFKA=standalone: the lib.KafkaMock process


def env_num(name, default, cast=float):
    v = os.environ.get(name)
    return cast(v) if v not in (None, "") else default


SECONDS = env_num("SOAK_SECONDS", 1800)
RATE = env_num("SOAK_RATE", 1800)
CONNECTIONS = env_num("SOAK_CONNECTIONS", 8, int)
SAMPLE_S = env_num("SOAK_SAMPLE_S", 5)
WARMUP_S = env_num("SOAK_WARMUP_S", min(max(120.0, 0.2 * SECONDS), 0.5 * SECONDS))
HUP_S = env_num("SOAK_HUP_S", 30)
RSS_BOUND = env_num("SOAK_RSS_MIB_H", 8.0)
LUA_BOUND = env_num("SOAK_LUA_MIB_H", 2.0)
MIX = [("buy", 30), ("soldout", 12), ("unknown", 15), ("bad", 8), ("lookup", 15), ("token", 10), ("idem", 10)]
# what each kind of request may be answered; anything else is counted as unexpected (and fails the soak).
# 429 busy (a take that waited past sale.queue_wait_ms on a loaded machine) is a refusal the API allows any buy.
ALLOWED = {
    "buy": {200, 429}, "soldout": {409, 429}, "unknown": {404}, "bad": {400}, "lookup": {200, 404},
    "token": {200, 429}, "token-buy": {200, 429}, "forged": {403}, "idem": {200, 429}, "replay": {200, 409, 429},
}


# ---------------------------------------------------------------- HTTP on a keep-alive connection

def encode(method, path, body=None, headers=None):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    body = body.encode() if isinstance(body, str) else (body or b"")
    h = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
    return ("%s %s HTTP/1.1\r\nHost: soak\r\nContent-Length: %d\r\n%s\r\n" % (method, path, len(body), h)).encode() + body


async def read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", 0))
    body = await reader.readexactly(n) if n else b""
    return status, headers, body


class Conn:
    def __init__(self, port):
        self.port, self.reader, self.writer = port, None, None

    async def request(self, method, path, body=None, headers=None, timeout=15):
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self.writer.write(encode(method, path, body, headers))
            return await asyncio.wait_for(read_response(self.reader), timeout)
        except Exception as e:  # no answer: counted as a failure by the caller
            self.close()
            return None, {}, repr(e).encode()

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# ---------------------------------------------------------------- the traffic

class Soak:
    def __init__(self, server, run):
        self.s, self.run = server, run
        self.big, self.gone, self.tokened = "soak-big-" + run, "soak-gone-" + run, "soak-tok-" + run
        self.counts = {}       # (kind, status) -> n
        self.unexpected = {}   # (kind, status) -> first body
        self.accepted = set()  # order ids answered 200
        self.recent = []       # a window of accepted order ids, for lookups
        self.idem_keys = []    # (user, key, body, order_id) of first answers, for replays
        self.replay_mismatch = []
        self.n = 0
        self.sent = 0

    def note(self, kind, status, body):
        self.counts[(kind, status)] = self.counts.get((kind, status), 0) + 1
        if status not in ALLOWED[kind] and (kind, status) not in self.unexpected:
            self.unexpected[(kind, status)] = body[:300]

    def took(self, body):
        oid = json.loads(body)["order_id"]
        self.accepted.add(oid)
        self.recent.append(oid)
        if len(self.recent) > 2000:
            del self.recent[:1000]
        return oid

    def user(self, prefix):
        self.n += 1
        return "%s-%s-%d" % (prefix, self.run, self.n)

    async def one(self, conn, kind):
        buy = "/seckill/add"
        if kind == "buy":
            st, _, b = await conn.request("POST", buy, {"item_id": self.big, "user_id": self.user("b")})
            self.note(kind, st, b)
            if st == 200:
                self.took(b)
        elif kind == "soldout":
            st, _, b = await conn.request("POST", buy, {"item_id": self.gone, "user_id": self.user("g")})
            self.note(kind, st, b)
        elif kind == "unknown":
            st, _, b = await conn.request("POST", buy, {"item_id": "nx-" + uuid.uuid4().hex[:16], "user_id": "u1"})
            self.note(kind, st, b)
        elif kind == "bad":
            body = random.choice(['{"item_id": "%s", "user_id": ' % self.big, '{"item_id": "%s"}' % self.big,
                                  '{"item_id": "%s", "user_id": "u", "quantity": 0}' % self.big, "[1, 2", "\x00\xff"])
            st, _, b = await conn.request("POST", buy, body)
            self.note(kind, st, b)
        elif kind == "lookup":
            if self.recent and random.random() < 0.8:
                oid = random.choice(self.recent)
            else:
                oid = "nx." + uuid.uuid4().hex
            st, _, b = await conn.request("GET", "/order/" + oid)
            self.note(kind, st, b)
        elif kind == "token":
            user = self.user("t")
            if random.random() < 0.1:
                st, _, b = await conn.request("POST", buy, {"item_id": self.tokened, "user_id": user,
                                                            "token": "forged." + uuid.uuid4().hex})
                self.note("forged", st, b)
                return
            st, _, b = await conn.request("POST", "/seckill/token", {"item_id": self.tokened, "user_id": user})
            self.note("token", st, b)
            if st != 200:
                return
            tok = json.loads(b)["token"]
            st, _, b = await conn.request("POST", buy, {"item_id": self.tokened, "user_id": user, "token": tok})
            self.note("token-buy", st, b)
            if st == 200:
                self.took(b)
        elif kind == "idem":
            if self.idem_keys and random.random() < 1 / 3:
                user, key, body, oid = random.choice(self.idem_keys)
                st, h, b = await conn.request("POST", buy, body, {"Idempotency-Key": key})
                self.note("replay", st, b)
                if st == 200 and (json.loads(b).get("order_id") != oid or h.get("idempotent-replayed") != "true"):
                    self.replay_mismatch.append((key, oid, b[:200], h.get("idempotent-replayed")))
                return
            user, key = self.user("i"), uuid.uuid4().hex
            body = {"item_id": self.big, "user_id": user}
            st, _, b = await conn.request("POST", buy, body, {"Idempotency-Key": key})
            self.note("idem", st, b)
            if st == 200:
                oid = self.took(b)
                self.idem_keys.append((user, key, body, oid))
                if len(self.idem_keys) > 2000:
                    del self.idem_keys[:1000]

    async def pacer(self, i, t0, stop_at, kinds, weights):
        """connection i: one request every CONNECTIONS / RATE s on an absolute schedule (a late one is sent at once,
        never in a burst to catch up more than one), until stop_at"""
        conn = Conn(self.s.port)
        interval = CONNECTIONS / RATE
        nxt = t0 + interval * i / CONNECTIONS
        limit = int(RATE * SECONDS / CONNECTIONS) + 1  # bounded by count as well as by time
        for _ in range(limit):
            now = time.monotonic()
            if now >= stop_at:
                break
            if nxt > now:
                await asyncio.sleep(nxt - now)
            nxt = max(nxt + interval, time.monotonic() - interval)
            self.sent += 1
            await self.one(conn, random.choices(kinds, weights)[0])
        conn.close()

    async def traffic(self):
        kinds, weights = zip(*MIX)
        t0 = time.monotonic()
        await asyncio.gather(*[self.pacer(i, t0, t0 + SECONDS, kinds, weights) for i in range(CONNECTIONS)])


# ---------------------------------------------------------------- samples, the fit

def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fit(points):
    """least-squares slope (per hour) and intercept of [(t_s, y)]"""
    n = len(points)
    if n < 2:
        return 0.0, points[0][1] if points else 0.0
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((t - mt) ** 2 for t, _ in points)
    sxy = sum((t - mt) * (y - my) for t, y in points)
    slope = sxy / sxx if sxx else 0.0
    return slope * 3600, my - slope * mt


async def sampler(soak, csv, t0, stop):
    s = soak.s
    hup_at = t0 + HUP_S
    reloads = 0
    csv.write("t_s,rss_kib,lua_bytes,sent,accepted,consumer_lag,reloads,mock_rss_kib\n")
    rows = []
    while True:
        now = time.monotonic()
        if now >= hup_at:
            s.send(signal.SIGHUP)
            reloads += 1
            hup_at += HUP_S
        try:
            m = await asyncio.get_running_loop().run_in_executor(None, s.metrics)
            lua = sum(v for k, v in m.items() if k.startswith("seckilld_lua_memory_bytes"))
            lag = sum(v for k, v in m.items() if k.startswith("seckilld_kafka_consumer_lag"))
        except Exception as e:
            print("soak: /metrics failed: %r" % e, flush=True)
            lua = lag = float("nan")
        row = (now - t0, rss_kib(s.proc.pid), lua, soak.sent, len(soak.accepted), lag, reloads,
               rss_kib(MOCK.proc.pid) if MOCK is not None else 0)
        rows.append(row)
        csv.write(",".join("" if v != v else ("%.1f" % v if i == 0 else "%d" % v) for i, v in enumerate(row)) + "\n")
        csv.flush()
        if len(rows) % max(1, int(60 / SAMPLE_S)) == 0:
            print("soak: %5.0fs  rss %6.1f MiB  lua %6.2f MiB  sent %d  accepted %d  lag %d%s" % (
                row[0], row[1] / 1024, lua / 2 ** 20, row[3], row[4], lag,
                "  mock rss %.1f MiB" % (row[7] / 1024) if MOCK is not None else ""), flush=True)
        if stop.is_set():
            return rows, reloads
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_S)
        except asyncio.TimeoutError:
            pass


async def drive(soak, csv):
    t0 = time.monotonic()
    stop = asyncio.Event()
    sampling = asyncio.ensure_future(sampler(soak, csv, t0, stop))
    await soak.traffic()
    elapsed = time.monotonic() - t0
    stop.set()
    rows, reloads = await sampling
    return rows, reloads, elapsed


# ---------------------------------------------------------------- the books: every 200 in MySQL once

def persisted_ids(items):
    rows = lib.mysql_query("SELECT order_id FROM orders WHERE item_id IN (%s)" % ",".join("'%s'" % i for i in items))
    return [r[0] for r in rows]


def check_books(soak):
    items = (soak.big, soak.tokened, soak.gone)
    deadline = time.monotonic() + 300
    while True:
        ids = persisted_ids(items)
        have = set(ids)
        missing = soak.accepted - have
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    return {"persisted": len(ids), "missing": len(missing), "twice": len(ids) - len(have),
            "extra": len(have - soak.accepted)}


# ---------------------------------------------------------------- main

def main():
    lib.require_env("SECKILLD_REDIS", "SECKILLD_MYSQL", "SK_MYSQL_PORT")
    run = uuid.uuid4().hex[:8]
    csv_path = os.environ.get("SOAK_CSV") or os.path.join(lib.BUILD, "soak", "soak-%s.csv" % time.strftime("%Y%m%d-%H%M%S"))
    os.makedirs(os.path.dirname(os.path.abspath(csv_path)), exist_ok=True)
    env = {"SECKILLD_TOKEN_SECRET": "soak-secret-" + run + "-0123456789"}
    workers = int(os.environ.get("SOAK_WORKERS", "0"))  # 0: the config's default, one per core
    global MOCK
    if os.environ.get("SOAK_KAFKA", "standalone") == "standalone":
        os.environ.setdefault("SECKILLD_KAFKA_PARTITIONS", "24")
        MOCK = lib.KafkaMock()
        env["SECKILLD_KAFKA"] = MOCK.bootstraps
    # a copy of the shipped scripts taken now, as the bench does: every SIGHUP reloads this snapshot, not a working
    # tree someone may be editing during a half-hour run
    scripts = tempfile.mkdtemp(prefix="sk-soak-scripts-")
    shutil.copytree(SHIPPED, scripts, dirs_exist_ok=True)
    s = lib.Server(scripts, workers=workers, conf=CONF, env=env, wait_healthy=True)
    soak = Soak(s, run)
    print("soak: seckilld pid %d on 127.0.0.1:%d, %d s at %d req/s over %d connections, SIGHUP every %d s, "
          "warm-up %d s, kafka %s; samples in %s" % (s.proc.pid, s.port, SECONDS, RATE, CONNECTIONS, HUP_S, WARMUP_S,
                                                      "standalone mock (pid %d)" % MOCK.proc.pid if MOCK else "embedded",
                                                      csv_path), flush=True)
    ok = True
    try:
        for item, spec in ((soak.big, {"stock": 1000000000, "limit_per_user": 1}),
                           (soak.gone, {"stock": 1, "limit_per_user": 1}),
                           (soak.tokened, {"stock": 1000000000, "limit_per_user": 1, "require_token": True})):
            st, r = s.json("PUT", "/admin/items/" + item, spec, ADMIN)
            assert st == 200, (item, st, r)
        st, r = s.json("POST", "/seckill/add", {"item_id": soak.gone, "user_id": "first"})
        assert st == 200, (st, r)
        soak.accepted.add(r["order_id"])
        with open(csv_path, "w") as csv:
            rows, reloads, elapsed = asyncio.run(drive(soak, csv))
        books = check_books(soak)
    finally:
        code = s.stop()
        if MOCK is not None:
            MOCK.__exit__()
        shutil.rmtree(scripts, ignore_errors=True)
    log = s.log()
    errors = [l for l in log.splitlines() if "[error]" in l]
    lua_errors = [l for l in errors if "lua" in l.lower()]
    if os.environ.get("SOAK_KEEP_LOG") == "1":
        print("soak: seckilld's log kept in %s" % s.logfile.name)
    else:
        os.unlink(s.logfile.name)

    # ---- the figures
    total = sum(soak.counts.values())
    by_status = {}
    for (kind, st), n in soak.counts.items():
        by_status[st] = by_status.get(st, 0) + n
    fivexx = sum(n for st, n in by_status.items() if st is not None and st >= 500)
    none = by_status.get(None, 0)
    after = [r for r in rows if r[0] >= WARMUP_S]
    rss_slope, rss_at = fit([(r[0], r[1] / 1024) for r in after])
    lua_pts = [(r[0], r[2] / 2 ** 20) for r in after if r[2] == r[2]]
    lua_slope, _ = fit(lua_pts)
    print("\n== soak: %.0f s, %d answers (%.0f/s), %d accepted orders (%.0f/s), %d reloads (SIGHUP)" % (
        elapsed, total, total / elapsed, len(soak.accepted), len(soak.accepted) / elapsed, reloads))
    print("   by status: %s" % ", ".join("%s %d" % (st, n) for st, n in
                                        sorted(by_status.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))))
    print("   by kind:   %s" % ", ".join("%s/%s %d" % (k, st, n) for (k, st), n in
                                        sorted(soak.counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0))))
    first, last = rows[0], rows[-1]
    print("   RSS  %.1f -> %.1f MiB (max %.1f); fitted after %.0f s: %+.2f MiB/h (bound %g)" % (
        first[1] / 1024, last[1] / 1024, max(r[1] for r in rows) / 1024, WARMUP_S, rss_slope, RSS_BOUND))
    if MOCK is not None:
        mock_slope, _ = fit([(r[0], r[7] / 1024) for r in after])
        print("   the standalone Kafka mock's RSS %.1f -> %.1f MiB; fitted after %.0f s: %+.2f MiB/h (not bounded)" % (
            first[7] / 1024, last[7] / 1024, WARMUP_S, mock_slope))
    print("   Lua  %.2f -> %.2f MiB (all workers); fitted after %.0f s: %+.2f MiB/h (bound %g)" % (
        first[2] / 2 ** 20, last[2] / 2 ** 20, WARMUP_S, lua_slope, LUA_BOUND))
    print("   MySQL: %(persisted)d orders of the soak's items, missing %(missing)d, twice %(twice)d, "
          "not answered 200 %(extra)d" % books)
    print("   samples: %s (%d rows)" % (csv_path, len(rows)))

    def fail(why):
        nonlocal ok
        ok = False
        print("FAIL: " + why)

    if len(after) < 3:
        fail("too few samples after the warm-up (%d) to fit a line: run longer" % len(after))
    if rss_slope >= RSS_BOUND:
        fail("RSS grows %.2f MiB/h (bound %g)" % (rss_slope, RSS_BOUND))
    if lua_slope >= LUA_BOUND:
        fail("Lua memory grows %.2f MiB/h (bound %g)" % (lua_slope, LUA_BOUND))
    if fivexx:
        fail("%d answers were 5xx" % fivexx)
    if none:
        fail("%d requests got no answer" % none)
    for (kind, st), body in sorted(soak.unexpected.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0)):
        fail("%s answered %s (%d times), e.g. %r" % (kind, st, soak.counts[(kind, st)], body))
    if soak.replay_mismatch:
        fail("%d Idempotency-Key replays differed from the first answer, e.g. %r" % (
            len(soak.replay_mismatch), soak.replay_mismatch[0]))
    if lua_errors:
        fail("Lua errors in the log:\n" + "\n".join(lua_errors[:10]))
    if errors:
        fail("%d [error] lines in the log:\n%s" % (len(errors), "\n".join(errors[:10])))
    if books["missing"] or books["twice"] or books["extra"]:
        fail("MySQL's orders do not match the 200s: %r" % books)
    if code != 0:
        fail("seckilld exited with %s" % code)
    print("soak: %s" % ("ok" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
