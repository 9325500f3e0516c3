"""The process-wide shared store (`shared`): visible across workers, atomic increments, TTLs, survives reloads."""
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
        assert s.json("PUT", "/kv/short", {"value": "x", "ttl": 200})[1] == {"ok": True}
        assert s.json("GET", "/kv/short")[1]["value"] == "x"
        time.sleep(0.3)
        assert s.json("GET", "/kv/short")[1]["type"] == "nil", "expired"
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
            out["r"] = lib.run_concurrently(s.port, [("POST", "/sema/wait?ms=1500", None, None)] * 5, concurrency=5)
        t = threading.Thread(target=waiters)
        t.start()
        time.sleep(0.3)  # the five are parked
        assert s.json("POST", "/sema/post?n=3")[1] == {"count": -2}, "3 resources for 5 waiters leave 2 waiting"
        t.join()
        bodies = [__import__("json").loads(b) for _, b, _ in out["r"]]
        granted = [b for b in bodies if b["ok"]]
        timed_out = [b for b in bodies if not b["ok"]]
        assert len(granted) == 3 and all(b["waited_ms"] < 1000 for b in granted), bodies
        assert len(timed_out) == 2 and all(b["err"] == "timeout" and b["waited_ms"] >= 1400 for b in timed_out), bodies
        assert s.json("GET", "/sema/misuse")[1] == {"raised": True, "a": True, "b": True, "c": False, "cerr": "timeout"}


lib.main(globals())
