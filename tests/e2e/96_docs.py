"""What a person reads in a browser (issue 14, items 1 and 2): the OpenAPI 3.1 document at /openapi.json (checked by
a real OpenAPI 3.1 validator, against the routes the scripts declare, and against real answers), Swagger UI at
/api-docs (the pinned swagger-ui-dist, rendered by headless Chromium), and the live sale dashboard at /dashboard
(loaded by headless Chromium during a running sale, its rendered numbers checked against GET /admin/items, a
screenshot left at $SK_BUILD_DIR/dashboard.png)."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

import lib

SHIPPED = os.path.join(lib.ROOT, "scripts")
DOC_FILE = os.path.join(SHIPPED, "docs", "openapi.json")
SALE_CONF = os.path.join(lib.SCRIPTS, "sale.conf")
TOKEN = {"Authorization": "Bearer test-token"}
NPM_DIR = os.environ.get("SECKILLD_NPM_DIR", "/opt/seckilld/npm")
SWAGGER_DIR = os.path.join(NPM_DIR, "node_modules", "swagger-ui-dist")
JSON_TYPE = "application/json; charset=utf-8"
BUILTINS = {("GET", "/healthz"), ("GET", "/metrics")}  # answered by the core (core/http.c), not declared by scripts
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def conf(extra=""):
    """sale.conf with extra top-level fields"""
    return lib.conf_plus(SALE_CONF, extra, "seckilld-docs-")


def server(extra="", workers=1, scripts=SHIPPED):
    return lib.Server(scripts, workers=workers, conf=conf(extra), wait_healthy=True)


def doc():
    with open(DOC_FILE) as f:
        return json.load(f)


def operations(d):
    """{(METHOD, path)} the document describes"""
    return {(m.upper(), p) for p, item in d["paths"].items() for m in item if m in METHODS}


def declared_routes():
    """{(METHOD, pattern)} that scripts/app.lua declares with app.route(...)"""
    with open(os.path.join(SHIPPED, "app.lua")) as f:
        text = f.read()
    routes = set(re.findall(r'^app\.route\("([A-Z]+)",\s*"([^"]+)"', text, re.M))
    assert len(routes) >= 10, routes
    return routes


def chromium(*args, timeout=60):
    """headless Chromium (Debian's); --no-sandbox: CI runs as root, where Chromium's sandbox cannot start"""
    exe = shutil.which("chromium")
    assert exe, "chromium missing: deps/install.sh installs Debian's chromium"
    profile = tempfile.mkdtemp(prefix="sk-chromium-")
    try:
        r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--no-first-run", "--hide-scrollbars", "--user-data-dir=" + profile] + list(args),
                           capture_output=True, text=True, timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert r.returncode == 0, "chromium %s: rc %s\n%s" % (args, r.returncode, r.stderr[-2000:])
    return r.stdout


# ===== the document =====

def test_openapi_json_is_served_and_valid_openapi_3_1():
    validate = os.path.join(NPM_DIR, "node_modules", ".bin", "validate-api")
    assert os.access(validate, os.X_OK), "%s missing: deps/install.sh installs deps/npm's packages" % validate
    with server() as s:
        status, headers, body = s.request("GET", "/openapi.json")
        assert status == 200 and headers["content-type"] == JSON_TYPE, (status, headers)
        assert json.loads(body) == doc()
        assert json.loads(body)["openapi"].startswith("3.1.")
        with tempfile.NamedTemporaryFile("wb", suffix=".json") as f:
            f.write(body)
            f.flush()
            r = subprocess.run([validate, f.name], capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and json.loads(r.stdout)["valid"] is True, r.stdout + r.stderr
    # the validator does judge: a parameter "in": "body" (Swagger 2, not OpenAPI 3) is refused
    broken = doc()
    broken["paths"]["/time"]["get"]["parameters"] = [{"name": "x", "in": "body", "schema": {}}]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:
        json.dump(broken, f)
        f.flush()
        r = subprocess.run([validate, f.name], capture_output=True, text=True, timeout=60)
        assert r.returncode != 0, r.stdout


def test_every_declared_route_is_documented_and_every_documented_route_is_served():
    d = doc()
    assert operations(d) == declared_routes() | BUILTINS, (
        "undocumented: %s; documented but not declared: %s"
        % (sorted(declared_routes() | BUILTINS - operations(d)), sorted(operations(d) - declared_routes() - BUILTINS)))
    samples = {"item_id": "no-such-item", "order_id": "no-such-order", "file": "dashboard.js"}
    with server() as s:
        for method, path in sorted(operations(d)):
            url = re.sub(r"\{(\w+)\}", lambda m: samples[m.group(1)], path)
            if path == "/api-docs/{file}":
                url = "/api-docs/swagger-ui.css"
            status, _, body = s.request(method, url, "{}" if method in ("PUT", "POST") else None)
            # the router's own 404 and 405 say the route does not exist
            assert status != 405 and b"no route for this path" not in body, (method, url, status, body[:200])
            documented = d["paths"][path][method.lower()]["responses"]
            assert str(status) in documented, "%s %s answered %s, not documented" % (method, path, status)


def test_every_status_error_code_and_header_of_api_md_is_documented():
    d = doc()
    with open(os.path.join(lib.ROOT, "..", "shared", "API.md")) as f:
        api = f.read()
    codes = set(re.findall(r'error: "([a-z_]+)"', api))
    assert len(codes) >= 14, codes
    enum = set(d["components"]["schemas"]["ErrorCode"]["enum"])
    assert codes <= enum, codes - enum
    text = json.dumps(d)
    for code in codes:  # each is named by the route that answers it, not only in the enum
        assert text.count('"%s"' % code) >= 2, code
    buy = d["paths"]["/seckill/add"]["post"]
    assert set(buy["responses"]) >= {"200", "400", "403", "404", "409", "413", "422", "429", "500", "503"}
    assert buy["parameters"][0]["$ref"].endswith("/IdempotencyKey")
    assert d["components"]["parameters"]["IdempotencyKey"]["name"] == "Idempotency-Key"
    assert "Idempotent-Replayed" in buy["responses"]["200"]["headers"]
    assert "Retry-After" in d["components"]["responses"]["Busy"]["headers"]
    assert "Retry-After" in d["components"]["responses"]["UnavailableOrOverloaded"]["headers"]
    assert d["components"]["securitySchemes"]["adminBearer"] == {
        "type": "http", "scheme": "bearer", "description": d["components"]["securitySchemes"]["adminBearer"]["description"]}
    for method, path in operations(d):
        op = d["paths"][path][method.lower()]
        if path.startswith("/admin/"):
            assert op.get("security") == [{"adminBearer": []}] and "401" in op["responses"], (method, path)
        else:
            assert "security" not in op, (method, path)


# ===== real answers against the documented schemas =====

def validator(d, method, path, status):
    """a jsonschema validator for the documented JSON body of one answer"""
    import jsonschema
    r = d["paths"][path][method.lower()]["responses"][str(status)]
    if "$ref" in r:
        r = d["components"]["responses"][r["$ref"].rsplit("/", 1)[1]]
    schema = dict(r["content"]["application/json"]["schema"])
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["components"] = d["components"]  # the document's "#/components/..." references resolve in it
    return jsonschema.Draft202012Validator(schema)


def test_real_answers_match_the_documented_schemas():
    try:
        import jsonschema  # noqa: F401
    except ImportError:
        raise AssertionError("python3-jsonschema missing: deps/install.sh installs it")
    d = doc()
    checked = []

    def check(s, method, url, path, body=None, headers=None, expect=None):
        status, hdrs, raw = s.request(method, url, body, headers)
        if expect is not None:
            assert status == expect, (method, url, status, raw[:300])
        assert str(status) in d["paths"][path][method.lower()]["responses"], (method, path, status)
        answer = json.loads(raw)
        errors = sorted(validator(d, method, path, status).iter_errors(answer), key=str)
        assert not errors, "%s %s %s %s: %s" % (method, url, status, answer, [e.message for e in errors])
        checked.append((method, path, status, answer.get("error")))
        return status, hdrs, answer

    secret = "docs-secret-0123456789abcdef"
    with server('limits = { user = { rate = 1, burst = 3 } }, token_secret = "%s",' % secret, workers=2) as s:
        item, gated, later = ("docs-" + uuid.uuid4().hex[:10] for _ in range(3))
        check(s, "PUT", "/admin/items/" + item, "/admin/items/{item_id}", {"stock": 2, "limit_per_user": 1}, TOKEN, 200)
        check(s, "PUT", "/admin/items/" + gated, "/admin/items/{item_id}", {"stock": 5, "require_token": True}, TOKEN, 200)
        soon = int(time.time() * 1000) + 3600000
        check(s, "PUT", "/admin/items/" + later, "/admin/items/{item_id}", {"stock": 5, "starts_at": soon}, TOKEN, 200)
        check(s, "PUT", "/admin/items/" + item, "/admin/items/{item_id}", {"stock": -1}, TOKEN, 400)
        check(s, "GET", "/admin/items/" + item, "/admin/items/{item_id}", None, None, 401)

        buy, u = "/seckill/add", uuid.uuid4().hex[:8]  # Idempotency-Keys are kept 24 h: new users each run
        _, _, first = check(s, "POST", buy, buy, {"item_id": item, "user_id": u + "a"}, {"Idempotency-Key": "k1"}, 200)
        _, hdrs, again = check(s, "POST", buy, buy, {"item_id": item, "user_id": u + "a"}, {"Idempotency-Key": "k1"}, 200)
        assert again == first and hdrs.get("idempotent-replayed") == "true", (again, hdrs)
        check(s, "POST", buy, buy, {"item_id": item, "user_id": u + "a", "quantity": 2}, {"Idempotency-Key": "k1"}, 422)
        check(s, "POST", buy, buy, {"item_id": item, "user_id": u + "b"}, None, 200)
        check(s, "POST", buy, buy, {"item_id": item, "user_id": u + "c"}, None, 409)  # sold_out
        check(s, "POST", buy, buy, {"item_id": "nope-" + uuid.uuid4().hex[:8], "user_id": u + "d"}, None, 404)
        check(s, "POST", buy, buy, {"item_id": item}, None, 400)
        check(s, "POST", buy, buy, {"item_id": later, "user_id": u + "e"}, None, 403)  # not_started, starts_at and now
        check(s, "POST", buy, buy, {"item_id": gated, "user_id": u + "f"}, None, 403)  # bad_token
        _, _, tok = check(s, "POST", "/seckill/token", "/seckill/token", {"item_id": gated, "user_id": u + "f"}, None, 200)
        check(s, "POST", buy, buy, {"item_id": gated, "user_id": u + "f", "token": tok["token"]}, None, 200)
        status, hdrs, busy = check(s, "POST", buy, buy, {"item_id": gated, "user_id": u + "f"}, None, 429)  # a 4th in 1 s
        _, _, tok = check(s, "POST", "/seckill/token", "/seckill/token", {"item_id": gated, "user_id": u + "h"}, None, 200)
        check(s, "POST", buy, buy, {"item_id": gated, "user_id": u + "h", "token": tok["token"]}, None, 200)
        _, _, over = check(s, "POST", buy, buy, {"item_id": gated, "user_id": u + "h", "token": tok["token"]}, None, 409)
        assert over["error"] == "limit_exceeded", over
        assert busy["limit"] == "user" and int(hdrs["retry-after"]) >= 1, (busy, hdrs)

        lib.wait_persisted([first["order_id"]])
        check(s, "GET", "/order/" + first["order_id"], "/order/{order_id}", expect=200)
        check(s, "GET", "/order/nope", "/order/{order_id}", expect=404)
        check(s, "GET", "/orders?user_id=" + u + "a", "/orders", expect=200)
        check(s, "GET", "/orders", "/orders", expect=400)
        check(s, "GET", "/time", "/time", expect=200)
        check(s, "GET", "/admin/items/" + item, "/admin/items/{item_id}", None, TOKEN, 200)
        check(s, "GET", "/admin/items/nope", "/admin/items/{item_id}", None, TOKEN, 404)
        check(s, "GET", "/admin/items/" + item + "/audit", "/admin/items/{item_id}/audit", None, TOKEN, 200)
        _, _, stats = check(s, "GET", "/admin/stats?item_id=" + item, "/admin/stats", None, TOKEN, 200)
        assert stats["items"][0]["answers"] == {"ok": 3, "sold_out": 1, "idempotency_mismatch": 1, "bad_request": 1}, stats
        latency = stats["items"][0]["latency_ms"]
        assert latency["bounds"][-1] is None and len(latency["counts"]) == len(latency["bounds"]) == 13, latency
        assert latency["counts"] == sorted(latency["counts"]) and latency["counts"][-1] == 6, latency  # every answer
        _, _, stats = check(s, "GET", "/admin/stats?item_id=" + gated, "/admin/stats", None, TOKEN, 200)
        assert stats["items"][0]["answers"] == {"bad_token": 1, "ok": 2, "busy": 1, "limit_exceeded": 1}, stats
        assert stats["items"][0]["latency_ms"]["counts"][-1] == 5, stats
        check(s, "GET", "/admin/stats", "/admin/stats", None, TOKEN, 200)
        check(s, "GET", "/healthz", "/healthz", expect=200)
        s.assert_no_errors_in_log()
    assert len(checked) >= 30, checked


# ===== Swagger UI =====

def test_swagger_ui_is_the_pinned_distribution_and_renders_the_document():
    with open(os.path.join(lib.ROOT, "deps", "npm", "package.json")) as f:
        pinned = json.load(f)["dependencies"]["swagger-ui-dist"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), "swagger-ui-dist must be pinned to an exact version: " + pinned
    with open(os.path.join(SWAGGER_DIR, "package.json")) as f:
        assert json.load(f)["version"] == pinned, "the installed swagger-ui-dist is not the pinned one"
    with server() as s:
        status, headers, page = s.request("GET", "/api-docs")
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8", (status, headers)
        for name, ctype in [("swagger-ui-bundle.js", "text/javascript"), ("swagger-ui-standalone-preset.js",
                            "text/javascript"), ("swagger-ui.css", "text/css"), ("index.css", "text/css"),
                            ("favicon-32x32.png", "image/png")]:
            assert ('"/api-docs/%s"' % name).encode() in page, name
            status, headers, body = s.request("GET", "/api-docs/" + name)
            assert status == 200 and headers["content-type"].startswith(ctype), (name, status, headers)
            with open(os.path.join(SWAGGER_DIR, name), "rb") as f:
                assert body == f.read(), name + " is not the distribution's file"
        status, _, init = s.request("GET", "/api-docs/swagger-initializer.js")
        assert status == 200 and b'url: "/openapi.json"' in init
        assert s.request("GET", "/api-docs/package.json")[0] == 404
        assert s.request("GET", "/api-docs/..%2f..%2fetc%2fpasswd")[0] == 404
        # a real browser renders the document: the title and every path appear in Swagger UI's DOM
        dom = chromium("--virtual-time-budget=10000", "--dump-dom", "http://127.0.0.1:%d/api-docs" % s.port)
        assert "swagger-ui" in dom and "seckilld" in dom, dom[:2000]
        for path in ["/seckill/add", "/seckill/token", "/admin/items/{item_id}/audit", "/admin/stats", "/healthz"]:
            assert path in dom, path + " not rendered by Swagger UI"
        s.assert_no_errors_in_log()


# ===== the dashboard =====

def rendered(dom, item):
    """{field: text} of the dashboard's numbers for one item"""
    at = dom.find('data-item="%s"' % item)
    assert at >= 0, "the item is not on the dashboard:\n" + dom[-3000:]
    end = dom.find("</section>", at)
    return dict(re.findall(r'data-field="([a-z_0-9]+)">([^<]*)<', dom[at:end]))


@lib.normal_only("the dashboard's JavaScript in Chromium against /admin/stats and /admin/items: script behaviour; the "
                 "static files and stats routes it reads run under ASan in this file's other cases")
def test_dashboard_shows_a_running_sale_in_headless_chromium():
    stock = 1500
    with server(workers=2) as s:
        item = "dash-" + uuid.uuid4().hex[:10]
        assert s.json("PUT", "/admin/items/" + item, {"stock": stock, "limit_per_user": 1}, TOKEN)[0] == 200
        status, headers, page = s.request("GET", "/dashboard")
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8" and b"/dashboard/chart.js" in page
        status, headers, js = s.request("GET", "/dashboard/chart.js")
        with open("/usr/share/javascript/chart.js/chart.min.js", "rb") as f:
            assert status == 200 and js == f.read(), "Chart.js is not Debian's libjs-chart.js"
        # the token travels in the fragment (never sent to a server); the page keeps it in sessionStorage
        url = "http://127.0.0.1:%d/dashboard#token=test-token&item=%s" % (s.port, item)

        results = []
        users = iter(range(10 ** 9))
        buyer = threading.Thread(target=lambda: results.extend(lib.hammer(
            s.port, lambda i: ("POST", "/seckill/add", {"item_id": item, "user_id": "u%d" % next(users)}, None), 4, 8)))
        buyer.start()
        try:
            lib.wait_until(lambda: s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]["sold"] > 0, 10,
                           what="the first sale")
            before = s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]
            dom = chromium("--virtual-time-budget=3000", "--dump-dom", url)
            after = s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]
            live = rendered(dom, item)
            # the numbers a person saw during the sale: between what the server said before and after the page loaded
            sold, left = int(live["sold"]), int(live["stock_left"])
            assert before["sold"] <= sold <= after["sold"], (before, live, after)
            assert sold + left == stock, live
            assert 0 <= int(live["orders_persisted"]) <= sold, live
            assert re.fullmatch(r"\d+\.\d", live["accepted_per_s"]), live
            os.makedirs(lib.BUILD, exist_ok=True)
            shot = os.path.join(lib.BUILD, "dashboard.png")
            if os.path.exists(shot):
                os.unlink(shot)
            chromium("--window-size=1280,900", "--virtual-time-budget=5000", "--screenshot=" + shot, url)
            assert os.path.getsize(shot) > 10000, "the screenshot is empty"
        finally:
            buyer.join()

        accepted = sum(1 for st, _ in results if st == 200)
        sold_out = sum(1 for st, body in results if st == 409 and b'"sold_out"' in body)
        assert accepted > 0 and accepted + sold_out == len(results), lib.statuses(results)
        lib.wait_until(lambda: s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]["orders_persisted"]
                       == accepted, 30, what="every order in MySQL")
        # once the sale is still, the page shows exactly the server's books and this process's answers
        final = s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]
        shown = rendered(chromium("--virtual-time-budget=3000", "--dump-dom", url), item)
        for field in ("stock_left", "sold", "orders_persisted"):
            assert int(shown[field]) == final[field], (field, shown, final)
        assert int(shown["sold"]) == accepted and int(shown["drift"]) == 0, shown
        assert int(shown["refused_sold_out"]) == sold_out, (shown, sold_out)
        assert re.fullmatch(r"\d+\.\d|–", shown["p99_ms"]), shown
        s.assert_no_errors_in_log()


@lib.normal_only("the dashboard page's JavaScript in Chromium without a token: no C path of its own")
def test_dashboard_without_a_token_asks_for_one():
    with server() as s:
        dom = chromium("--virtual-time-budget=2000", "--dump-dom", "http://127.0.0.1:%d/dashboard" % s.port)
        assert re.search(r'<form id="login">', dom), "the token form is not shown"
        assert s.json("GET", "/admin/stats")[0] == 401
        dom = chromium("--virtual-time-budget=2000", "--dump-dom",
                       "http://127.0.0.1:%d/dashboard#token=wrong" % s.port)
        assert "That token was refused." in dom


# ===== static.read =====

def test_static_read_only_while_the_scripts_load():
    d = tempfile.mkdtemp(prefix="sk-static-")
    with open(os.path.join(d, "page.html"), "w") as f:
        f.write("<p>hello</p>\n")
    with open(os.path.join(d, "app.lua"), "w") as f:
        f.write('local page = assert(static.read("page.html"))\n'
                'local missing, err = static.read("nope.html")\n'
                'app.route("GET", "/page", function() return 200, page, { ["content-type"] = "text/html" } end)\n'
                'app.route("GET", "/missing", function() return { missing = missing or json.null, err = err } end)\n'
                'app.route("GET", "/late", function() return 200, static.read("page.html") end)\n')
    with lib.Server(d) as s:
        assert s.request("GET", "/page")[2] == b"<p>hello</p>\n"
        assert s.json("GET", "/missing") == (200, {"missing": None, "err": "no such file or directory"})
        assert s.request("GET", "/late")[0] == 500
        lib.wait_until(lambda: "only be read while the scripts load" in s.log(), 5, what="the error logged")
        s.allowed_errors = [r"static\.read"]
    shutil.rmtree(d)


lib.main(globals())
