"""Request ids and structured logs (issue 14, item 3): X-Request-Id accepted when valid, else generated, echoed on
every response (built-ins, 404/405/413, the deadline's and the shedder's 503s included) and on every log line
written while serving the request, Lua's log.* with fields included; log_format = "json"; the access log."""
import json
import os
import re
import tempfile
import threading
import time

import lib

GENERATED = re.compile(r"^[0-9a-f]{16}$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def conf(text):
    f = tempfile.NamedTemporaryFile("w", prefix="sk-logs-", suffix=".conf", delete=False)
    f.write("return { %s }\n" % text)
    f.close()
    return f.name


def server(text="", **kw):
    kw.setdefault("workers", 2)
    s = lib.Server("logs", conf=conf(text), **kw)
    s.allowed_errors = [r"lua error: .*boom"]
    return s


def lines_with(s, needle, n=1, timeout=5):
    return lib.wait_until(lambda: [l for l in s.log().splitlines() if needle in l] if sum(
        needle in l for l in s.log().splitlines()) >= n else None, timeout, what="%r in the log" % needle)


def test_a_valid_request_id_is_echoed_and_on_the_handlers_log_lines():
    with server() as s:
        rid = "Abc-123.x:y_z"
        status, hdrs, body = s.request("GET", "/hello/it-1", headers={"X-Request-Id": rid})
        assert status == 200 and hdrs["x-request-id"] == rid, (status, hdrs)
        assert json.loads(body)["id"] == rid  # req.id
        line = lines_with(s, "handling")[0]
        assert " req=%s: " % rid in line, line
        # the fields, sorted, as key=value (a value with a space quoted)
        assert line.endswith('handling item=it-1 n=3 note="two words" ok=true'), line
        assert "[info] worker-" in line, line
        # what the handler spawned logs under the same id
        child = lines_with(s, "spawned child")[0]
        assert " req=%s: " % rid in child, child
        # a line without fields is as before; several arguments still join with spaces
        status, hdrs, _ = s.request("GET", "/plain", headers={"X-Request-Id": "p-1"})
        line = lines_with(s, "no fields two parts")[0]
        assert " req=p-1: " in line and line.endswith("no fields two parts"), line
        # the 64-character limit is inclusive
        rid = "a" * 64
        status, hdrs, _ = s.request("GET", "/plain", headers={"X-Request-Id": rid})
        assert hdrs["x-request-id"] == rid
        # lines of no request carry no id
        assert not [l for l in s.log().splitlines() if "listening on" in l and "req=" in l]


def test_an_invalid_request_id_is_replaced():
    with server() as s:
        seen = set()
        for bad in ("has space", "a" * 65, "semi;colon", "", "ünï"):
            status, hdrs, body = s.request("GET", "/plain", headers={"X-Request-Id": bad.encode().decode("latin-1")})
            rid = hdrs["x-request-id"]
            assert status == 200 and GENERATED.match(rid) and rid != bad, (bad, hdrs)
            assert json.loads(body)["id"] == rid
            seen.add(rid)
        status, hdrs, _ = s.request("GET", "/plain")
        assert GENERATED.match(hdrs["x-request-id"])
        seen.add(hdrs["x-request-id"])
        assert len(seen) == 6, seen  # each one new


def test_every_answer_carries_an_id():
    with server("http = { deadline_ms = 200, max_body = 100 }", env={"SECKILLD_MAX_INFLIGHT": "1"},
                workers=1) as s:
        for method, path, body, want in (("GET", "/healthz", None, None), ("GET", "/metrics", None, 200),
                                         ("GET", "/nowhere", None, 404), ("POST", "/plain", None, 405),
                                         ("GET", "/plain", "x" * 200, 413), ("GET", "/slow?ms=400", None, 503),
                                         ("GET", "/fail", None, 500)):
            status, hdrs, _ = s.request(method, path, body)
            assert want is None or status == want, (path, status)
            assert GENERATED.match(hdrs.get("x-request-id", "")), (path, hdrs)
            status, hdrs, _ = s.request(method, path, body, headers={"X-Request-Id": "given-" + str(want)})
            assert hdrs.get("x-request-id") == "given-" + str(want), (path, hdrs)
        # the Lua error's line names its request
        line = lines_with(s, "lua error")[-1]
        assert " req=given-500: " in line, line
        # the handler past its deadline still logs under its id when it ends
        line = lines_with(s, "slow done", 2)[-1]
        assert " req=given-503: " in line, line
        # the shedder's 503: one slow request in flight on the only worker, the next one is shed
        t = threading.Thread(target=s.request, args=("GET", "/slow?ms=2000"))
        t.start()
        lib.wait_until(lambda: s.metric("seckilld_coroutines_inflight") >= 1, 10, interval=0.02,
                       what="the slow request in flight")
        status, hdrs, body = s.request("GET", "/plain", headers={"X-Request-Id": "shed-1"})
        t.join()
        assert status == 503 and b"overloaded" in body and hdrs["x-request-id"] == "shed-1", (status, body, hdrs)


def test_json_lines_parse_with_their_fields():
    with server(env={"SECKILLD_LOG_FORMAT": "json"}) as s:
        s.request("GET", "/hello/it-2", headers={"X-Request-Id": "json-1"})
        lines_with(s, "spawned child")
        records = [json.loads(l) for l in s.log().splitlines() if l.strip()]  # every line is one JSON object
        assert len(records) > 5
        for r in records:
            assert TIME.match(r["time"]) and r["level"] in ("debug", "info", "warn", "error"), r
            assert r["worker"] and isinstance(r["msg"], str), r
        h = [r for r in records if r["msg"].endswith("handling")][0]
        assert h["request_id"] == "json-1" and h["level"] == "info" and h["worker"].startswith("worker-"), h
        assert h["fields"] == {"item": "it-2", "n": 3, "ok": True, "note": "two words"}, h
        assert h["msg"].startswith("[lua] ") and "app.lua:3" in h["msg"], h
        child = [r for r in records if r["msg"].endswith("spawned child")][0]
        assert child["request_id"] == "json-1" and "fields" not in child, child
        start = [r for r in records if "listening on" in r["msg"]][0]
        assert "request_id" not in start, start
    # the config key does the same
    with server('log_format = "json"') as s:
        assert all(json.loads(l) for l in s.log().splitlines() if l.strip())


def test_access_log_one_line_per_response():
    path = tempfile.mktemp(prefix="sk-access-", suffix=".log")
    try:
        with server('access_log = %r, http = { deadline_ms = 200 }' % path) as s:
            s.request("GET", "/hello/it-3", headers={"X-Request-Id": "acc-1"})
            s.request("GET", "/nowhere", headers={"X-Request-Id": "acc-2"})
            s.request("GET", "/healthz", headers={"X-Request-Id": "acc-3"})
            s.request("GET", "/slow?ms=3000", headers={"X-Request-Id": "acc-4"})
            s.request("GET", "/plain?secret=1", headers={"X-Request-Id": "acc-5"})
            time.sleep(0.5)
        with open(path) as f:
            lines = f.read().splitlines()
        # one per response: the start-up's /healthz probes, then ours
        assert all(" [access] " in l for l in lines), lines
        lines = [l for l in lines if " req=acc-" in l]
        assert len(lines) == 5, lines
        by = {re.search(r" req=(\S+):", l).group(1): l for l in lines}
        assert re.search(r"\[access\] worker-\d req=acc-1: access method=GET path=/hello/it-3 status=200 "
                         r"latency_ms=\d+\.\d{3} item_id=it-3 user_id=u-1 order_id=o-it-3$", by["acc-1"]), by["acc-1"]
        assert "path=/nowhere status=404 " in by["acc-2"], by["acc-2"]
        assert re.search(r"path=/healthz status=(200|503) ", by["acc-3"]), by["acc-3"]
        m = re.search(r"status=503 latency_ms=(\d+\.\d+)", by["acc-4"])
        # the deadline's answer, when it was sent: at the 200 ms deadline, before the 3 s handler ended
        assert m and 199 <= float(m.group(1)) < 3000, by["acc-4"]
        assert "path=/plain status=200" in by["acc-5"] and "secret" not in by["acc-5"], by["acc-5"]
        # JSON access lines, on stderr with access_log = true
        with server("access_log = true", env={"SECKILLD_LOG_FORMAT": "json"}) as s:
            s.request("GET", "/hello/it-4", headers={"X-Request-Id": "acc-6"})
            line = [l for l in lines_with(s, '"request_id":"acc-6"', 2) if '"level":"access"' in l][0]
            r = json.loads(line)
            assert r["request_id"] == "acc-6" and r["msg"] == "access", r
            f = r["fields"]
            assert (f["method"], f["path"], f["status"], f["item_id"], f["user_id"], f["order_id"]) == (
                "GET", "/hello/it-4", 200, "it-4", "u-1", "o-it-4"), r
            assert isinstance(f["latency_ms"], float) and f["latency_ms"] >= 0, r
        # off by default: no access line
        with server() as s:
            s.request("GET", "/plain")
            assert "[access]" not in s.log()
    finally:
        if os.path.exists(path):
            os.unlink(path)


lib.main(globals())
