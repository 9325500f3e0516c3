"""scripts/sale/coalesce.lua, the coalescing primitive the buy handler is built on: callers of one key wait for
the batch in flight and are served together, in order, at most batch_max at a time; nothing is left behind."""
import json
import os
import shutil
import tempfile
import threading
import time

import lib


def server():
    d = tempfile.mkdtemp(prefix="sk-coalesce-")
    os.makedirs(os.path.join(d, "sale"))
    shutil.copy(os.path.join(lib.ROOT, "scripts", "sale", "coalesce.lua"), os.path.join(d, "sale"))
    shutil.copy(os.path.join(lib.SCRIPTS, "coalesce", "app.lua"), d)
    s = lib.Server(d, workers=1)
    s.tmpdir = d
    return s


def submit(key, i, **q):
    extra = "".join("&%s=%s" % kv for kv in q.items())
    return ("POST", "/submit/%s?id=%s%s" % (key, i, extra), "", None)


def leader_then(s, first, rest):
    """sends `first` alone, and `rest` concurrently once it is surely leading its batch; answers in that order"""
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("first", lib.run_concurrently(s.port, [first], 1)[0]))
    t.start()
    time.sleep(0.3)
    others = lib.run_concurrently(s.port, rest, concurrency=len(rest))
    t.join()
    return [json.loads(b) for _, b, _ in [out["first"]] + others]


def state(s):
    return s.json("GET", "/state")[1]


def test_callers_are_served_in_batches_in_order():
    with server() as s:
        res = lib.run_concurrently(s.port, [submit("k", i) for i in range(40)], concurrency=40)
        bodies = [json.loads(b) for _, b, _ in res]
        assert all(st == 200 and b["ok"] for (st, _, _), b in zip(res, bodies)), bodies
        st = state(s)
        sizes = st["batches"]["k"]
        # the first caller runs alone, the rest queue and are taken 8 at a time
        assert sizes[0] == 1 and sum(sizes) == 40 and max(sizes) <= 8 and len(sizes) <= 7, sizes
        assert st["served_twice"] == 0 and st["lanes"] == 0, st


def test_keys_do_not_wait_for_each_other():
    with server() as s:
        res = lib.run_concurrently(s.port, [submit("k%d" % (i % 4), i, sleep_ms=200) for i in range(4)],
                                   concurrency=4)
        assert all(st == 200 for st, _, _ in res)
        assert max(t for _, _, t in res) < 0.6, [t for _, _, t in res]  # four keys in parallel, not 4 x 200 ms
        assert state(s)["lanes"] == 0


def test_a_caller_that_waits_too_long_is_busy_and_leaves_the_queue():
    with server() as s:
        # the first batch takes 1.5 s; those queued behind it give up after wait_ms (1 s)
        bodies = leader_then(s, submit("slow", 0, sleep_ms=1500), [submit("slow", i) for i in range(1, 5)])
        assert bodies[0]["ok"] is True
        assert all(b["ok"] is False and b["err"] == "busy" for b in bodies[1:]), bodies
        assert state(s)["lanes"] == 0


def test_a_failing_batch_fails_every_entry_and_the_next_batch_runs():
    with server() as s:
        s.allowed_errors = [r"run failed on purpose"]
        bodies = leader_then(s, submit("f", 0, fail=1, sleep_ms=600), [submit("f", i) for i in range(1, 6)])
        assert bodies[0]["ok"] is False and "run failed on purpose" in bodies[0]["err"], bodies[0]
        assert all(b["ok"] is True for b in bodies[1:]), bodies  # the next batch, led by the first waiter
        assert state(s)["lanes"] == 0


def test_many_keys_leave_no_lanes_behind():
    with server() as s:
        res = lib.run_concurrently(s.port, [submit("key-%d" % i, i, sleep_ms=1) for i in range(3000)],
                                   concurrency=32)
        assert all(st == 200 for st, _, _ in res)
        assert state(s)["lanes"] == 0


lib.main(globals())
