"""Faults around the order's life (issue 22): MySQL down while orders expire, Redis restarted empty while orders wait
for payment, a process killed in the middle of a burst of expiries. They stop and restart the services, so they run
with the outage scenarios (tests/run.sh: OUTAGES), on services of their own."""
import json
import os
import signal
import time

import lib
from importlib import import_module

life = import_module("68_life")
LONG = os.environ.get("SK_LONG") == "1"  # make test-long: MySQL stays down 30 s
POOL_BACKOFF_MAX_S = 2.0  # bindings/mysql/pool.c BACKOFF_MAX_MS: a pool retries a failed connect at most this late
server, new_item, buy, pay, cancel, view = life.server, life.new_item, life.buy, life.pay, life.cancel, life.view
rows, statuses_of, wait_released, assert_books = life.rows, life.statuses_of, life.wait_released, life.assert_books


def test_mysql_down_while_orders_expire():
    with server() as s:
        item = new_item(s, 20, pay_within_s=1)
        ids = [buy(s, item, "m%d" % i) for i in range(20)]
        lib.wait_persisted(ids)
        lib.services("mysql-stop")
        try:
            time.sleep(30 if LONG else 2.5)  # every order comes due while MySQL is down: nothing can be decided
            assert view_or_none(s, item) is None
        finally:
            lib.services("mysql-start")
        up_at = time.monotonic()
        wait_released(ids)
        assert set(statuses_of(ids).values()) == {("expired", 1)}
        # every worker's pool reconnected (each worker has its own). Eight views in a row may all reach one worker (a new
        # connection each, and the kernel may wake the same worker every time) while the other's pool still answers
        # "unavailable" at once: a pool that failed to connect does so until its retry, at most BACKOFF_MAX_MS (2 s,
        # bindings/mysql/pool.c) after its last failure, which was before MySQL came back. Past that every pool has
        # retried, or connects on the next request and makes it wait instead of failing it.
        lib.wait_until(lambda: all(view_or_none(s, item) is not None for _ in range(8)), 60,
                       what="seckilld reconnected to MySQL")
        time.sleep(max(0.0, up_at + POOL_BACKOFF_MAX_S + 0.5 - time.monotonic()))
        assert_books(s, item, 20, 0)
        assert lib.redis_cli("GET", "seckill:{%s}:stock" % item) == "20"


def view_or_none(s, item):
    status, r = s.json("GET", "/admin/items/" + item, None, life.TOKEN)
    return r["item"] if status == 200 else None


def test_redis_restarted_empty_while_orders_wait_for_payment():
    """orders paid, cancelled, expired and pending when Redis loses everything: the rebuild counts the paid and the
    pending ones, never sells a paid unit again and never loses a released one; what expires later is released once"""
    with server() as s:
        item = new_item(s, 10, pay_within_s=8)
        ids = [buy(s, item, "e%d" % i) for i in range(8)]
        # paid and cancelled at once, well before the deadline (a queued order is persisted by its payment or cancel)
        for oid in ids[:2]:
            assert json.loads(pay(s, oid, 0)[1])["outcome"] == "paid"
        for i in (2, 3):
            assert cancel(s, ids[i], "e%d" % i)[0] == 200
        lib.wait_persisted(ids)
        wait_released(ids[2:4])
        lib.services("redis-stop")
        lib.services("redis-start")  # empty: the harness runs redis without persistence
        # rebuilt from MySQL (the grace, a barrier): the paid and the pending orders hold units, the cancelled ones
        # not; the pending ones expire meanwhile or after, and are released once each
        wait_released(ids[2:])
        lib.wait_until(lambda: (view_or_none(s, item) or {}).get("stock_left") == 8, 90,
                       what="the item rebuilt, 2 units paid")
        v = assert_books(s, item, 10, 2)
        assert v["paid"] == 2 and v["released"] == 6, v
        assert [lib.redis_cli("HGET", "seckill:{%s}:users" % item, "e%d" % i) or "0" for i in range(8)] == \
            ["1", "1"] + ["0"] * 6


def test_kill_in_a_burst_of_expiries():
    """10,000 orders come due within seconds; the process is killed (SIGKILL) once some are released and others not
    yet, and started again: every order ends expired and released once, and every unit is back"""
    n = 10000
    with server("eval") as s:
        item = new_item(s, n, pay_within_s=8)
        got = lib.buy_out(s.port, item, "k", n, concurrency=32)
        assert len(got) == n

        def counts():
            r = rows("SELECT SUM(status = 'expired'), SUM(released) FROM orders WHERE item_id = '%s'" % item)[0]
            return int(r[0] if r[0] != "NULL" else 0), int(r[1] if r[1] != "NULL" else 0)
        lib.wait_until(lambda: 0 < counts()[1] < n, 120, interval=0.02, what="a burst of expiries under way")
        s.proc.send_signal(signal.SIGKILL)
        s.proc.wait()
        print("killed with %d expired and %d released of %d" % (counts() + (n,)))
        s.start(wait_healthy=True)
        lib.wait_persisted(got, timeout=120)
        wait_released(got, timeout=120)
        v = assert_books(s, item, n, 0)
        assert v["stock_left"] == n and v["released"] == n, v
        assert lib.redis_cli("HLEN", "seckill:{%s}:users" % item) == "0"


if __name__ == "__main__":
    lib.main(globals())
