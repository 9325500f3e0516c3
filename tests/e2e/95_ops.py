"""What an operator runs around the server (issue 14): the Prometheus alert rules (promtool check and unit tests),
the Grafana dashboard against what /metrics really exports, JSON answers typed as JSON (GET /orders with no orders),
and h2o 2.2.5's fixed request-header limit (README)."""
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import uuid

import lib

PROM = os.path.join(lib.ROOT, "conf", "prometheus")
RULES = os.path.join(PROM, "seckilld.rules.yml")
DASHBOARD = os.path.join(lib.ROOT, "conf", "grafana", "seckilld-dashboard.json")
JSON_TYPE = "application/json; charset=utf-8"


def promtool(*args):
    assert shutil.which("promtool"), "promtool missing: deps/install.sh installs Debian's prometheus package"
    r = subprocess.run(["promtool"] + list(args), capture_output=True, text=True, timeout=60, cwd=PROM)
    assert r.returncode == 0, "promtool %s:\n%s%s" % (" ".join(args), r.stdout, r.stderr)
    return r.stdout


def sale_server():
    return lib.Server(os.path.join(lib.ROOT, "scripts"), workers=1, conf=os.path.join(lib.SCRIPTS, "sale.conf"),
                      wait_healthy=True)


def exported_families(s):
    """metric families of /metrics (from its # TYPE lines), after a buy so that every lazily made series exists"""
    token = {"Authorization": "Bearer test-token"}
    item = "ops-" + uuid.uuid4().hex[:12]
    status, r = s.json("PUT", "/admin/items/" + item, {"stock": 2, "limit_per_user": 1}, token)
    assert status == 200, (status, r)
    status, r = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "u1"})
    assert status == 200, (status, r)
    status, r = s.json("GET", "/admin/items/%s/audit" % item, None, token)  # sets seckilld_books_drift_units
    assert status == 200, (status, r)
    # the expire task (life/expire.lua) sets seckilld_orders_overdue_oldest_seconds at the end of each round, the first
    # one sale.expire_ms (1 s) after the start
    lib.wait_until(lambda: b"\nseckilld_orders_overdue_oldest_seconds " in s.request("GET", "/metrics")[2], 10,
                   what="the expire task's first round")
    status, _, text = s.request("GET", "/metrics")
    assert status == 200
    return set(re.findall(r"^# TYPE (\S+) ", text.decode(), re.M))


def metric_names(expr):
    """the seckilld_* metric families an expression reads (histogram series map to their family)"""
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"\bseckilld_[a-z0-9_]+", expr)}


def assert_known(names, families, where):
    for n in names:
        assert n in families or re.sub(r"_(bucket|sum|count)$", "", n) in families, \
            "%s reads %s, which /metrics does not export (it exports: %s)" % (where, n, sorted(families))


# ===== Prometheus and Grafana =====

def test_alert_rules_check_and_unit_tests():
    out = promtool("check", "rules", RULES)
    assert "SUCCESS" in out, out
    out = promtool("test", "rules", "seckilld.rules.test.yml")
    assert "SUCCESS" in out, out
    with open(os.path.join(PROM, "seckilld.rules.test.yml")) as f:
        fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:", f.read()))
    assert len(fired) >= 2, fired


def test_rules_and_dashboard_read_only_exported_metrics():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    exprs = []
    for p in dash["panels"]:
        targets = [t for t in p.get("targets", []) if t.get("expr")]
        assert targets, "panel %r has no query" % p.get("title")
        exprs += [(p["title"], t["expr"]) for t in targets]
    for want in ("seckilld_http_requests_total", "seckilld_http_request_duration_seconds_bucket",
                 "seckilld_kafka_consumer_lag", "seckilld_kafka_dead_lettered_total", "seckilld_redis_tx_conflicts_total"):
        assert any(want in e for _, e in exprs), "the dashboard shows no %s" % want
    with open(RULES) as f:
        rule_exprs = re.findall(r"^\s+expr: (?:\|\n)?((?:.+\n)+?)(?=\s+(?:for|labels):)", f.read(), re.M)
    assert len(rule_exprs) >= 10, rule_exprs
    with sale_server() as s:
        families = exported_families(s)
    assert "seckilld_kafka_consumer_lag" in families, sorted(families)
    for title, e in exprs:
        names = metric_names(e)
        assert names, "panel %r: %s names no seckilld metric" % (title, e)
        assert_known(names, families, "panel %r" % title)
    for e in rule_exprs:
        assert_known(metric_names(e), families, "rule expr %s" % e.strip())
    # every dashboard query is valid PromQL: promtool parses them as recording rules (Grafana's variables filled in)
    d = tempfile.mkdtemp(prefix="sk-promql-")
    try:
        path = os.path.join(d, "dashboard.rules.yml")
        with open(path, "w") as f:
            f.write("groups:\n  - name: dashboard\n    rules:\n")
            for i, (_, e) in enumerate(exprs):
                e = e.replace("$instance", ".*").replace("$__range", "15m")
                f.write("      - record: dashboard:panel_%d\n        expr: %s\n" % (i, json.dumps(e)))
        out = promtool("check", "rules", path)
        assert "SUCCESS: %d rules found" % len(exprs) in out, out
    finally:
        shutil.rmtree(d)


# ===== small contract fixes =====

def test_orders_of_a_user_with_none_is_json():
    with sale_server() as s:
        status, hdrs, body = s.request("GET", "/orders?user_id=nobody-" + uuid.uuid4().hex[:12])
        assert status == 200 and hdrs["content-type"] == JSON_TYPE, (status, hdrs, body)
        assert json.loads(body) == {"ok": True, "orders": []}, body


def test_json_text_bodies_are_typed_json_other_text_is_not():
    d = tempfile.mkdtemp(prefix="sk-scripts-")
    try:
        for f in os.listdir(os.path.join(lib.SCRIPTS, "core")):
            shutil.copy(os.path.join(lib.SCRIPTS, "core", f), d)
        with open(os.path.join(d, "app.lua"), "a") as f:
            f.write('\napp.route("GET", "/ops/body", function(req)\n'
                    '    local bodies = { list = "[]", object = \' {"ok":true,"orders":[]}\\n\', words = "plain words",\n'
                    '                     broken = "{not json", empty = "", table = {} }\n'
                    '    return 200, bodies[req.query.kind]\nend)\n')
        with lib.Server(d) as s:
            for kind, ctype, body in (("list", JSON_TYPE, b"[]"), ("object", JSON_TYPE, b' {"ok":true,"orders":[]}\n'),
                                      ("table", JSON_TYPE, b"{}"), ("empty", JSON_TYPE, b""),
                                      ("words", "text/plain; charset=utf-8", b"plain words"),
                                      ("broken", "text/plain; charset=utf-8", b"{not json")):
                status, hdrs, got = s.request("GET", "/ops/body?kind=" + kind)
                assert (status, hdrs["content-type"], got) == (200, ctype, body), (kind, status, hdrs, got)
    finally:
        shutil.rmtree(d)


def raw_get(port, path, extra_headers):
    """one HTTP/1.1 request with n extra headers on a fresh connection; the status code"""
    head = "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" % path
    head += "".join("X-Extra-%d: %d\r\n" % (i, i) for i in range(extra_headers)) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(head.encode())
        data = b""
        while b"\r\n" not in data:
            chunk = c.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(data.split(b" ")[1])


def test_h2o_header_limit_is_as_documented():
    """h2o 2.2.5 parses at most 100 request headers (H2O_MAX_HEADERS, fixed at its build); README says so"""
    with open(os.path.join(lib.ROOT, "README.md")) as f:
        assert re.search(r"100 request headers", f.read()), "the README does not document the header limit"
    with sale_server() as s:
        assert raw_get(s.port, "/healthz", 50) == 200
        assert raw_get(s.port, "/orders?user_id=u-" + uuid.uuid4().hex[:8], 50) == 200
        assert raw_get(s.port, "/healthz", 100) == 400
        assert raw_get(s.port, "/healthz", 0) == 200  # and the server serves on


lib.main(globals())
