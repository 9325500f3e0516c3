"""Load shedding (API v1.1): above http.max_inflight requests in flight on a worker, a new request is answered 503
`overloaded` with Retry-After at once, without entering Lua; /healthz, /metrics and /admin/ are never shed.

The shed app's buy holds its request until the test releases it (tests/e2e/scripts/shed/app.lua), so "at once" is
checked as an order of events: every shed answer arrives while the admitted buys are still held. How fast a shed
answer is belongs to make bench (part admission)."""
import asyncio
import json
import threading

import lib

MAX_INFLIGHT = 50
CLIENTS = 2000
HANG_S = 120  # only to catch a hang: a run that needs this long has failed


async def one_buy(port, i, out):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(lib._encode("POST", "/seckill/add", {"item_id": "i", "user_id": "u%d" % i}, None))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HANG_S)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict((k.strip().lower(), v.strip()) for k, _, v in (l.partition(":") for l in lines[1:] if l))
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        writer.close()
        out[i] = (int(lines[0].split(" ")[1]), headers, json.loads(body))
    except Exception as e:  # a refused, dropped or hung request is a result too, and fails the test below
        out[i] = (None, {}, repr(e))


def poll(s, path, stop, answers):
    """GET path on one keep-alive connection every 10 ms until stop is set: [(status, body)]"""
    import http.client
    import time
    conn = http.client.HTTPConnection("127.0.0.1", s.port, timeout=HANG_S)
    while not stop.is_set():
        conn.request("GET", path)
        r = conn.getresponse()
        answers.append((r.status, r.read()))
        time.sleep(0.01)
    conn.close()


def flood(port, n):
    """n buys at once from one thread; returns (thread, out): out[i] is (status, headers, body) once answered"""
    out = [None] * n

    async def go():
        await asyncio.gather(*[one_buy(port, i, out) for i in range(n)])
    t = threading.Thread(target=lambda: asyncio.run(go()))
    t.start()
    return t, out


def test_over_max_inflight_answers_503_overloaded_at_once():
    with lib.Server("shed", workers=1, env={"SECKILLD_MAX_INFLIGHT": str(MAX_INFLIGHT)}) as s:
        stop = threading.Event()
        health, admin = [], []
        pollers = [threading.Thread(target=poll, args=(s, "/healthz", stop, health)),
                   threading.Thread(target=poll, args=(s, "/admin/ping", stop, admin))]
        for t in pollers:
            t.start()
        try:
            thread, out = flood(s.port, CLIENTS)
            # the admitted buys are held until released, so all but max_inflight must be answered while they are
            # held: a shed answer that waited for a handler would never come
            answered = lambda: [r for r in out if r is not None]
            lib.wait_until(lambda: len(answered()) >= CLIENTS - MAX_INFLIGHT, HANG_S, interval=0.2,
                           what="every buy beyond max_inflight to be answered while %d are held" % MAX_INFLIGHT)
            early = answered()
            assert all(r[0] == 503 for r in early), "answered while the admitted buys are held: %r" % (
                {r[0] for r in early}, [r for r in early if r[0] != 503][:3])
            st, held = s.json("GET", "/admin/ping")
            assert st == 200 and held["running"] == MAX_INFLIGHT, (st, held)  # /admin/ is not shed while full
            st, _, _ = s.request("GET", "/healthz")
            assert st == 200, st
            assert s.metric("seckilld_http_shed_total") == CLIENTS - MAX_INFLIGHT
            st, _ = s.json("POST", "/admin/release")
            assert st == 200
            thread.join(HANG_S)
            assert not thread.is_alive(), "the held buys were answered once released"
        finally:
            stop.set()
            for t in pollers:
                t.join()

        failed = [r for r in out if r[0] not in (200, 503)]
        assert not failed, "every buy is answered 200 or 503: %d not, e.g. %r" % (len(failed), failed[:3])
        ok = [r for r in out if r[0] == 200]
        shed = [r for r in out if r[0] == 503]
        assert len(ok) == MAX_INFLIGHT and all(r[2] == {"ok": True, "released": True} for r in ok), ok[:3]
        assert len(shed) == CLIENTS - MAX_INFLIGHT, len(shed)
        peak = s.json("GET", "/peak")[1]
        assert peak == {"peak": MAX_INFLIGHT, "running": 0}, "never more than max_inflight handlers at once: %r" % peak
        for status, headers, body in shed:
            assert body == {"ok": False, "error": "overloaded", "message": body.get("message")}, body
            assert headers.get("retry-after") == "1", headers
        assert s.metric("seckilld_http_shed_total") == len(shed), (s.metric("seckilld_http_shed_total"), len(shed))

        assert health and all(st == 200 for st, _ in health), [a for a in health if a[0] != 200][:5]
        assert admin and all(st == 200 for st, _ in admin), "/admin/ is never shed: %r" % admin[:5]
        # the admin poller saw the worker full (its answers are never shed, whatever the load)
        assert any(json.loads(b)["running"] == MAX_INFLIGHT for _, b in admin), "the poller never saw it full"
        # and once the flood is over, buys are admitted again
        assert s.json("POST", "/seckill/add", {"item_id": "i", "user_id": "late"})[0] == 200


def test_zero_means_unlimited():
    n = 200
    with lib.Server("shed", workers=1, env={"SECKILLD_MAX_INFLIGHT": "0"}) as s:
        thread, out = flood(s.port, n)
        # all n are admitted and held at once: none is shed
        lib.wait_until(lambda: s.json("GET", "/admin/ping")[1]["running"] == n or any(out), HANG_S, interval=0.2,
                       what="%d buys held at once" % n)
        assert not any(out), "answered before the release: %r" % [r for r in out if r][:3]
        assert s.json("POST", "/admin/release")[0] == 200
        thread.join(HANG_S)
        assert not thread.is_alive()
        assert [r[0] for r in out].count(200) == n, [r for r in out if r[0] != 200][:3]
        assert s.json("GET", "/peak")[1]["peak"] == n
        assert s.metric("seckilld_http_shed_total") == 0


lib.main(globals())
