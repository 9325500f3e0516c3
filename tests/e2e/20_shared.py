"""The process-wide shared store (`shared`): visible across workers, atomic increments, TTLs, survives reloads."""
import re
import signal
import time

import lib


def test_incr_is_atomic_across_workers():
    with lib.Server("shared", workers=2) as s:
        results = lib.run_concurrently(s.port, [("POST", "/incr/hits", None, None)] * 4000, concurrency=64)
        assert [r[0] for r in results].count(200) == 4000
        seen = sorted(int(__import__("json").loads(r[1])["value"]) for r in results)
        assert seen == list(range(1, 4001)), "every increment returned a distinct value"
        assert s.json("GET", "/kv/hits")[1] == {"value": 4000, "type": "number", "is_integer": True}


def test_types_ttl_and_reload():
    with lib.Server("shared", workers=2) as s:
        for value, typ in (("text", "string"), (1.5, "number"), (True, "boolean"), (7, "number")):
            assert s.json("PUT", "/kv/k", {"value": value})[1] == {"ok": True}
            assert s.json("GET", "/kv/k")[1]["value"] == value
            assert s.json("GET", "/kv/k")[1]["type"] == typ
        assert s.json("PUT", "/kv/k", {})[1] == {"ok": True}  # nil deletes
        assert s.json("GET", "/kv/k")[1]["type"] == "nil"
        assert s.json("PUT", "/kv/short", {"value": "x", "ttl": 2000})[1] == {"ok": True}
        assert s.json("GET", "/kv/short")[1]["value"] == "x"
        lib.wait_until(lambda: s.json("GET", "/kv/short")[1]["type"] == "nil", 10, what="the entry to expire")
        s.json("PUT", "/kv/keep", {"value": "kept"})
        s.send(signal.SIGHUP)
        lib.wait_until(lambda: s.metric('seckilld_reloads_total{result="ok"}') == 1, 5, what="the reload")
        assert s.json("GET", "/kv/keep")[1]["value"] == "kept", "the store is C-owned and survives reloads"
        s.json("PUT", "/kv/str", {"value": "s"})
        assert s.json("POST", "/incr/str")[1] == {"err": "not an integer"}


def test_semaphore_wakes_waiters_in_order_and_times_out():
    import threading
    with lib.Server("shared", workers=1) as s:
        out = {}

        def waiters():
            out["r"] = lib.run_concurrently(s.port, [("POST", "/sema/wait?ms=3000", None, None)] * 5, concurrency=5)
        t = threading.Thread(target=waiters)
        t.start()
        lib.wait_until(lambda: s.json("GET", "/sema/count")[1] == {"count": -5} or out, 10, interval=0.02,
                       what="the five waiters to park")
        assert s.json("POST", "/sema/post?n=3")[1] == {"count": -2}, "3 resources for 5 waiters leave 2 waiting"
        t.join()
        bodies = [__import__("json").loads(b) for _, b, _ in out["r"]]
        granted = [b for b in bodies if b["ok"]]
        timed_out = [b for b in bodies if not b["ok"]]
        assert len(granted) == 3, bodies
        # the other two waited for their whole 3 s, never less
        assert len(timed_out) == 2 and all(b["err"] == "timeout" and b["waited_ms"] >= 2990 for b in timed_out), bodies
        assert s.json("GET", "/sema/misuse")[1] == {"raised": True, "a": True, "b": True, "c": False, "cerr": "timeout"}


def test_limit_is_one_bucket_per_key_across_workers():
    import json
    with lib.Server("shared", workers=2) as s:
        results = lib.run_concurrently(s.port, [("POST", "/limit/k1?burst=10", None, None)] * 200, concurrency=32)
        bodies = [json.loads(r[1]) for r in results]
        assert sum(1 for b in bodies if b["ok"]) == 10, "exactly the burst is admitted, whichever worker serves"
        refused = [b for b in bodies if not b["ok"]]
        assert len(refused) == 190 and all(b["retry"] > 900 for b in refused), refused[:3]  # 1/1000 per second
        assert s.json("POST", "/limit/k2?burst=1")[1] == {"ok": True}, "another key, another bucket"
        assert s.json("GET", "/kv/k1")[1]["type"] == "nil", "the buckets do not show through shared.get"
        s.json("PUT", "/kv/k3", {"value": "not a bucket"})
        assert s.json("POST", "/limit/k3?burst=1")[1] == {"ok": True}, "nor does a shared key disturb a bucket"
        s.send(signal.SIGHUP)
        lib.wait_until(lambda: s.metric('seckilld_reloads_total{result="ok"}') == 1, 5, what="the reload")
        assert s.json("POST", "/limit/k1?burst=10")[1]["ok"] is False, "the buckets survive a reload"
        misuse = s.json("GET", "/limit-misuse")[1]
        assert "bad argument #2" in misuse["rate"] and "rate must be > 0" in misuse["rate"], misuse
        assert "bad argument #3" in misuse["burst"] and "burst must be >= 1" in misuse["burst"], misuse
        assert "bad argument #4" in misuse["cost"], misuse
        assert "bad argument #1" in misuse["key"], misuse
        assert "bad argument #2" in misuse["nan"], misuse


def test_counters_are_one_array_per_name_across_workers_and_reloads():
    import json
    with lib.Server("shared", workers=2) as s:
        assert s.json("GET", "/counters/c1")[1] == {"exists": False}, "a lookup makes nothing"
        reqs = [("POST", "/counters/c1/%d" % (1 + i % 2), None, None) for i in range(4000)]
        results = lib.run_concurrently(s.port, reqs, concurrency=64)
        assert [r[0] for r in results].count(200) == 4000
        for cell in (1, 2):
            seen = sorted(json.loads(r[1])["value"] for r, q in zip(results, reqs) if q[1].endswith("/%d" % cell))
            assert seen == list(range(1, 2001)), "every add to cell %d returned a distinct value" % cell
        assert s.json("POST", "/counters/c1/4?d=-5")[1] == {"value": -5}
        assert s.json("GET", "/counters/c1")[1] == {"exists": True, "cells": [2000, 2000, 0, -5]}
        assert s.json("GET", "/kv/c1")[1]["type"] == "nil", "the arrays do not show through shared.get"
        s.send(signal.SIGHUP)
        lib.wait_until(lambda: s.metric('seckilld_reloads_total{result="ok"}') == 1, 5, what="the reload")
        assert s.json("POST", "/counters/c1/1")[1] == {"value": 2001}, "the arrays survive a reload"
        misuse = s.json("GET", "/counters-misuse")[1]
        assert "bad argument #1" in misuse["cell0"] and "no such cell" in misuse["cell0"], misuse
        assert "no such cell" in misuse["cell3"], misuse
        assert "misuse exists with another number of cells" in misuse["size"], misuse
        assert "bad argument #2" in misuse["zero"], misuse
        assert "bad argument #1" in misuse["notc"], misuse


def test_crypto():
    with lib.Server("shared") as s:
        status, b = s.json("POST", "/crypto", {"key": "Jefe", "msg": "what do ya want for nothing?"})
        assert status == 200, b
        assert b["mac"] == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843", "RFC 4231 test case 2"
        assert (b["same"], b["other"], b["shorter"]) == (True, False, False), b
        assert re.fullmatch("[0-9a-f]{32}", b["r1"]) and b["r1"] != b["r2"], b
        assert "bad argument #1" in b["bad"][0] and "between 1 and 64" in b["bad"][0], b["bad"]
        assert "bad argument #1" in b["bad"][1], b["bad"]
        assert "bad argument #2" in b["bad"][2], b["bad"]
        assert "bad argument #2" in b["bad"][3], b["bad"]


lib.main(globals())
