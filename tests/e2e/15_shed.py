"""Load shedding (API v1.1): above http.max_inflight requests in flight on a worker, a new request is answered 503
`overloaded` with Retry-After at once, without entering Lua; /healthz, /metrics and /admin/ are never shed."""
import asyncio
import json
import threading
import time

import lib

MAX_INFLIGHT = 50
CLIENTS = 2000
SLEEP_S = 1.5  # scripts/shed/app.lua's buy


async def one_buy(port, i, out):
    t0 = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(lib._encode("POST", "/seckill/add", {"item_id": "i", "user_id": "u%d" % i}, None))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict((k.strip().lower(), v.strip()) for k, _, v in (l.partition(":") for l in lines[1:] if l))
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        writer.close()
        out[i] = (int(lines[0].split(" ")[1]), headers, json.loads(body), time.monotonic() - t0)
    except Exception as e:  # a refused, dropped or hung request is a result too, and fails the test below
        out[i] = (None, {}, repr(e), time.monotonic() - t0)


def poll(s, path, stop, latencies):
    """GET path on one keep-alive connection every 10 ms until stop is set: [(status, seconds)]"""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=5)
    while not stop.is_set():
        t0 = time.monotonic()
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        latencies.append((r.status, time.monotonic() - t0))
        time.sleep(0.01)
    conn.close()


def test_over_max_inflight_answers_503_overloaded_at_once():
    with lib.Server("shed", workers=1, env={"SECKILLD_MAX_INFLIGHT": str(MAX_INFLIGHT)}) as s:
        stop = threading.Event()
        health, admin = [], []
        pollers = [threading.Thread(target=poll, args=(s, "/healthz", stop, health)),
                   threading.Thread(target=poll, args=(s, "/admin/ping", stop, admin))]
        for t in pollers:
            t.start()
        out = [None] * CLIENTS

        async def flood():
            await asyncio.gather(*[one_buy(s.port, i, out) for i in range(CLIENTS)])
        t0 = time.monotonic()
        asyncio.run(flood())
        elapsed = time.monotonic() - t0
        stop.set()
        for t in pollers:
            t.join()

        failed = [r for r in out if r[0] not in (200, 503)]
        assert not failed, "every buy is answered 200 or 503: %d not, e.g. %r" % (len(failed), failed[:3])
        ok = [r for r in out if r[0] == 200]
        shed = [r for r in out if r[0] == 503]
        peak = s.json("GET", "/peak")[1]
        assert peak["peak"] <= MAX_INFLIGHT, "never more than max_inflight handlers at once: %r" % peak
        assert len(ok) >= MAX_INFLIGHT, "the first %d are admitted (%d were)" % (MAX_INFLIGHT, len(ok))
        # all 2000 arrive within one handler's sleep, unless the machine is slow: then a few more are admitted once
        # the first ones finish, never more than max_inflight at once (checked above)
        assert len(shed) >= CLIENTS - 3 * MAX_INFLIGHT, "the rest are shed: %d of %d" % (len(shed), CLIENTS)
        for status, headers, body, took in shed:
            assert body == {"ok": False, "error": "overloaded", "message": body.get("message")}, body
            assert headers.get("retry-after") == "1", headers
        slowest_shed = max(r[3] for r in shed)
        assert slowest_shed < SLEEP_S * 2 / 3, "a shed request is answered at once, not after a sleep: %.3fs" % slowest_shed
        assert all(SLEEP_S - 0.05 <= r[3] < SLEEP_S + 2.5 for r in ok), sorted(r[3] for r in ok)[-3:]
        assert elapsed < 3 * SLEEP_S + 3, "nobody waits unboundedly: the flood took %.1fs" % elapsed
        assert s.metric("seckilld_http_shed_total") == len(shed), (s.metric("seckilld_http_shed_total"), len(shed))

        assert len(health) >= 10 and all(st == 200 for st, _ in health), health[:5]
        worst = max(t for _, t in health)
        assert worst < 0.1, "/healthz answered within 100 ms throughout (worst %.0f ms)" % (worst * 1000)
        assert admin and all(st == 200 for st, _ in admin), "/admin/ is never shed: %r" % admin[:5]
        # and once the flood is over, buys are admitted again
        assert s.json("POST", "/seckill/add", {"item_id": "i", "user_id": "late"})[0] == 200


def test_zero_means_unlimited():
    with lib.Server("shed", workers=1, env={"SECKILLD_MAX_INFLIGHT": "0"}) as s:
        results = lib.run_concurrently(s.port, [("POST", "/seckill/add", {}, None)] * 200, concurrency=200)
        assert [r[0] for r in results].count(200) == 200
        assert s.json("GET", "/peak")[1]["peak"] == 200
        assert s.metric("seckilld_http_shed_total") == 0


lib.main(globals())
