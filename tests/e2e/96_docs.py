"""What a person reads in a browser (issue 14, items 1 and 2; issue 23, the waiting room's page): the OpenAPI 3.1
document at /openapi.json (checked by a real OpenAPI 3.1 validator, against the routes the scripts declare, against
API.md and API-v1.2.md's "The order's life" and "Waiting room", and against real answers), Swagger UI at /api-docs
(the pinned swagger-ui-dist, rendered by headless Chromium), the live sale dashboard at /dashboard (loaded by headless
Chromium during a running sale, its rendered numbers checked against GET /admin/items and, once orders are paid,
cancelled and expired, against what happened, and a waiting room's counts; a screenshot left at
$SK_BUILD_DIR/dashboard.png), and the waiting room's page at /queue/{item_id} (driven in headless Chromium over the
DevTools protocol, tests/e2e/browser.py, from joining to an order; a screenshot left at $SK_BUILD_DIR/queue.png)."""
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid

import lib

SHIPPED = os.path.join(lib.ROOT, "scripts")
DOC_FILE = os.path.join(SHIPPED, "docs", "openapi.json")
SALE_CONF = os.path.join(lib.SCRIPTS, "sale.conf")
TOKEN = {"Authorization": "Bearer test-token"}
PAYMENT_SECRET = "docs-payment-secret-0123456789"  # SECKILLD_PAYMENT_SECRET: 16+ characters
QUEUE_SECRET = "docs-queue-secret-0123456789"  # token_secret: a waiting room's passes are purchase tokens
NPM_DIR = os.environ.get("SECKILLD_NPM_DIR", "/opt/seckilld/npm")
SWAGGER_DIR = os.path.join(NPM_DIR, "node_modules", "swagger-ui-dist")
JSON_TYPE = "application/json; charset=utf-8"
BUILTINS = {("GET", "/healthz"), ("GET", "/metrics")}  # answered by the core (core/http.c), not declared by scripts
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def conf(extra=""):
    """sale.conf with extra top-level fields"""
    return lib.conf_plus(SALE_CONF, extra, "seckilld-docs-")


def server(extra="", workers=1, scripts=SHIPPED, env=None):
    return lib.Server(scripts, workers=workers, conf=conf(extra), env=env, wait_healthy=True)


def signed(body, secret=PAYMENT_SECRET):
    """the raw body and the Seckill-Signature of a payment callback: HMAC-SHA256 over "<t>.<raw body>" (API-v1.2.md)"""
    raw = json.dumps(body)
    t = int(time.time() * 1000)
    mac = hmac.new(secret.encode(), ("%d.%s" % (t, raw)).encode(), hashlib.sha256).hexdigest()
    return raw, {"Seckill-Signature": "t=%d,v1=%s" % (t, mac), "Content-Type": "application/json"}


def v12_section(title):
    """a section of API-v1.2.md, from its "## <title>" heading to the next"""
    with open(os.path.join(lib.ROOT, "..", "shared", "API-v1.2.md")) as f:
        text = f.read()
    at = text.index("## " + title)
    end = text.find("\n## ", at + 1)
    return text[at:end if end >= 0 else len(text)]


def orders_life_section():
    """API-v1.2.md's section "The order's life" """
    return v12_section("The order's life")


def waiting_room_section():
    """API-v1.2.md's section "Waiting room (v1.2)" """
    return v12_section("Waiting room (v1.2)")


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
        % (sorted((declared_routes() | BUILTINS) - operations(d)), sorted(operations(d) - declared_routes() - BUILTINS)))
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


def resolved(d, response):
    """a response object with its $ref followed"""
    if "$ref" in response:
        return d["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    return response


def test_every_status_error_code_and_header_of_the_orders_life_is_documented():
    """API-v1.2.md's "The order's life" checked as API.md is above: every status and error code the section names is
    answered by the route that answers it, its header, outcomes, reasons, order statuses and item fields are in the
    document (the waiting room's section is checked by the next case)."""
    d = doc()
    life = orders_life_section()
    S = d["components"]["schemas"]
    # its routes, by the names the scripts declare them under
    routes = {(m, re.sub(r"\{id\}", "{item_id}", p)) for m, p in re.findall(r"`(GET|PUT|POST|DELETE) (/[^`\s]*)", life)}
    assert routes >= {("POST", "/order/{order_id}/cancel"), ("POST", "/payments/callback"),
                      ("PUT", "/admin/items/{item_id}")}, routes
    assert routes <= operations(d), routes - operations(d)
    cancel = d["paths"]["/order/{order_id}/cancel"]["post"]
    callback = d["paths"]["/payments/callback"]["post"]
    # "404 `unknown_order`", "409 `error: "already_paid"` or `"expired"`", "401 `bad_signature`", ...
    named = re.findall(r'\b([1-5]\d\d)\s+`(?:error: )?"?([a-z_]+)"?`(?:\s+or\s+`"([a-z_]+)"`)?', life)
    codes = {(int(st), c) for st, a, b in named for c in (a, b) if c}
    assert codes >= {(404, "unknown_order"), (409, "already_paid"), (409, "expired"), (400, "bad_request"),
                     (401, "bad_signature"), (422, "amount_mismatch")}, codes
    enum = set(S["ErrorCode"]["enum"])
    assert {c for _, c in codes} <= enum, {c for _, c in codes} - enum
    text = json.dumps(d)
    for status, code in codes:  # each named by a route of the section that answers it with that status
        assert text.count('"%s"' % code) >= 2, code
        answering = [op for op in (cancel, callback) if str(status) in op["responses"]
                     and '"%s"' % code in json.dumps(resolved(d, op["responses"][str(status)]))]
        assert answering, "%s %s: no route of the order's life documents it" % (status, code)
    # the statuses the section gives each route (the 409 with the order in its body, the callback's 503)
    assert set(cancel["responses"]) >= {"200", "400", "404", "409"}, sorted(cancel["responses"])
    assert set(callback["responses"]) >= {"200", "400", "401", "404", "422", "503"}, sorted(callback["responses"])
    assert "order" in cancel["responses"]["409"]["content"]["application/json"]["schema"]["allOf"][1]["required"]
    assert '"no_payment_secret"' not in text and "payment_secret" in callback["responses"]["503"]["description"]
    # the header: `Seckill-Signature: t=<unix ms>,v1=<hex HMAC-SHA256 ...>`, required on the callback
    headers = set(re.findall(r"header `([A-Z][A-Za-z-]+):", life))
    assert headers == {"Seckill-Signature"}, headers
    params = [d["components"]["parameters"][p["$ref"].rsplit("/", 1)[1]] if "$ref" in p else p
              for p in callback["parameters"]]
    for h in headers:
        assert {"name": h, "in": "header", "required": True}.items() <= next(
            p for p in params if p["name"] == h).items(), params
    assert "security" not in callback and "security" not in cancel  # signed, not behind the admin token
    # outcomes and reasons: `{"ok":true,"outcome":"paid",...}`, `"reason":"expired"|"cancelled"|"already_paid"`
    outcomes = set(re.findall(r'"outcome":"([a-z_]+)"', life))
    reasons = set(re.findall(r'"([a-z_]+)"', " ".join(re.findall(r'"reason":((?:"[a-z_]+"\|?)+)', life))))
    assert outcomes == {"paid", "refund_due"}, outcomes
    assert reasons == {"expired", "cancelled", "already_paid"}, reasons
    branches = S["PaymentOutcome"]["oneOf"]
    assert {b["properties"]["outcome"]["const"] for b in branches} == outcomes
    refund = next(b for b in branches if b["properties"]["outcome"]["const"] == "refund_due")
    assert set(refund["properties"]["reason"]["enum"]) == reasons and "reason" in refund["required"]
    # the order's statuses, from the section's diagram, and its deadline
    diagram = re.sub(r"\([^)]*\)", "", life.split("```")[1])
    statuses = set(re.findall(r"[a-z]+", diagram))
    assert statuses == {"queued", "created", "paid", "cancelled", "expired"}, statuses
    assert set(S["Order"]["properties"]["status"]["enum"]) == statuses
    assert "expires_at" in life and "expires_at" in S["Order"]["required"]
    assert S["Order"]["properties"]["expires_at"]["type"] == ["integer", "null"]
    # the item: PUT takes "price" and "pay_within_s"; its view adds "paid" and "released"
    put_bullet = next(line for line in life.split("\n- ") if line.startswith("`PUT /admin/items/{id}`"))
    fields = set(re.findall(r'`"([a-z_]+)"`', put_bullet))
    assert fields == {"price", "pay_within_s", "paid", "released"}, fields
    assert {"price", "pay_within_s"} <= set(S["ItemSetup"]["properties"]), sorted(S["ItemSetup"]["properties"])
    assert fields <= set(S["Item"]["properties"]), sorted(S["Item"]["properties"])
    assert {"paid", "released"} <= set(S["ItemView"]["properties"]["item"]["allOf"][1]["required"])
    assert "released_units" in S["Audit"]["properties"]["mysql"]["required"]  # the audit's count of released units


def test_every_route_status_error_code_state_and_field_of_the_waiting_room_is_documented():
    """API-v1.2.md's "Waiting room (v1.2)" checked as "The order's life" is above: its routes are in the document,
    every status and error code it names is answered by a route of the section with that status, the states of a
    ticket are the branches of the status answer, each with the fields the section gives it, and the item's setting
    (with its ranges) and its view's and /admin/stats' fields are there."""
    d = doc()
    room = waiting_room_section()
    S = d["components"]["schemas"]
    text = json.dumps(d)
    # its routes, by the names the scripts declare them under (`GET /queue/status?ticket=T`: the path)
    routes = {(m, p.split("?")[0]) for m, p in re.findall(r"`(GET|PUT|POST|DELETE) (/[^`\s]*)", room)}
    assert routes == {("POST", "/queue/join"), ("GET", "/queue/status"), ("GET", "/queue/{item_id}"),
                      ("POST", "/seckill/token")}, routes
    assert routes <= operations(d), routes - operations(d)
    ops = {r: d["paths"][r[1]][r[0].lower()] for r in routes | {("POST", "/seckill/add")}}
    # "404 `unknown_item`; 403 `ended`; 409 `sold_out`", "403 `bad_ticket`", "403 `error: "queue_required"`", ...
    named = re.findall(r'\b([1-5]\d\d)\s+`(?:error: )?"?([a-z_]+)"?`(?:\s+or\s+`"([a-z_]+)"`)?', room)
    codes = {(int(st), c) for st, a, b in named for c in (a, b) if c}
    assert codes >= {(404, "unknown_item"), (403, "ended"), (409, "sold_out"), (403, "bad_ticket"),
                     (403, "bad_token"), (403, "queue_required")}, codes
    enum = set(S["ErrorCode"]["enum"])
    assert {c for _, c in codes} <= enum, {c for _, c in codes} - enum
    for status, code in codes:  # each named by a route of the section (or the buy) that answers it with that status
        answering = [r for r, op in ops.items() if str(status) in op["responses"]
                     and '"%s"' % code in json.dumps(resolved(d, op["responses"][str(status)]))]
        assert answering, "%s %s: no route of the waiting room documents it" % (status, code)
    join, status_op = ops[("POST", "/queue/join")], ops[("GET", "/queue/status")]
    assert set(join["responses"]) >= {"200", "400", "403", "404", "409", "503"}, sorted(join["responses"])
    assert set(status_op["responses"]) >= {"200", "400", "403", "503"}, sorted(status_op["responses"])
    assert '"bad_ticket"' in json.dumps(status_op["responses"]["403"])
    assert '"queue_required"' in json.dumps(ops[("POST", "/seckill/token")]["responses"]["403"])
    assert '"no_waiting_room"' in json.dumps(join["responses"]["409"])  # the core's answer for an item without one
    ticket = [p for p in status_op["parameters"] if p["name"] == "ticket"]
    assert ticket and ticket[0]["in"] == "query" and ticket[0]["required"] is True, status_op["parameters"]
    page = ops[("GET", "/queue/{item_id}")]
    assert list(page["responses"]["200"]["content"]) == ["text/html"]
    # the states: `"state":"waiting"`, `{"state":"admitted",...}`, `{"state":"sold_out"}`, `{"state":"expired"}`
    states = set(re.findall(r'"state":"([a-z_]+)"', room))
    assert states == {"waiting", "admitted", "sold_out", "expired"}, states
    branches = {}
    for b in S["QueueStatus"]["oneOf"]:
        schema = S[b["$ref"].rsplit("/", 1)[1]]
        branches[schema["properties"]["state"]["const"]] = schema
    assert set(branches) == states, sorted(branches)
    # each state's fields, as the section writes its answer: `{"ok":true,"ticket":"…","state":"waiting",...}`
    for state in states:
        fields = set()
        for body in re.findall(r'`(\{[^`]*"state":"%s"[^`]*)`' % state, room):
            fields |= set(re.findall(r'"([a-z_]+)":', body))
        assert fields and fields <= set(branches[state]["properties"]), (state, fields)
        assert fields - {"ticket"} <= set(branches[state]["required"]), (state, fields, branches[state]["required"])
    assert branches["waiting"]["properties"]["position"]["minimum"] == 1  # `position` 1 is next
    assert S["QueueJoined"]["allOf"][1] == {"required": ["ticket"]}  # a join always gives the ticket
    # a replacement ticket (the spec's reissue after the draw) is documented where a client reads it
    assert "newest" in status_op["description"] and "ticket" in branches["waiting"]["properties"]
    # the setting: `"waiting_room": {"admit_per_s": R, "pass_ttl_s": 300}` (R 1–100,000; `pass_ttl_s` 10–3600)
    setting = re.search(r'`"waiting_room": \{([^`]*)\}`', room).group(1)
    assert set(re.findall(r'"([a-z_]+)":', setting)) == {"admit_per_s", "pass_ttl_s"}, setting
    wr = S["WaitingRoom"]
    rate = re.search(r"R ([\d,]+)–([\d,]+)", room).groups()
    ttl = re.search(r"`pass_ttl_s` ([\d,]+)–([\d,]+)", room).groups()
    for field, (lo, hi) in (("admit_per_s", rate), ("pass_ttl_s", ttl)):
        prop = wr["properties"][field]
        assert (prop["minimum"], prop["maximum"]) == (int(lo.replace(",", "")), int(hi.replace(",", ""))), (field, prop)
    assert wr["properties"]["pass_ttl_s"]["default"] == 300 and "waiting_room" in S["ItemSetup"]["properties"]
    # "The item view and `/admin/stats` add `waiting`, `admitted`, `admit_per_s`."
    added = set(re.findall(r"`([a-z_]+)`", re.search(r"The item view and `/admin/stats` add ([^.]*)\.", room).group(1)))
    assert added == {"waiting", "admitted", "admit_per_s"}, added
    assert added | {"waiting_room"} <= set(S["Item"]["properties"]), sorted(S["Item"]["properties"])
    assert set(S["Item"]["dependentRequired"]["waiting_room"]) == added
    assert added <= set(S["ItemStats"]["properties"]), sorted(S["ItemStats"]["properties"])
    assert text.count('"queue_required"') >= 2 and text.count('"bad_ticket"') >= 2


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
    checked, answers = [], []

    def check(s, method, url, path, body=None, headers=None, expect=None):
        status, hdrs, raw = s.request(method, url, body, headers)
        if expect is not None:
            assert status == expect, (method, url, status, raw[:300])
        assert str(status) in d["paths"][path][method.lower()]["responses"], (method, path, status)
        answer = json.loads(raw)
        errors = sorted(validator(d, method, path, status).iter_errors(answer), key=str)
        assert not errors, "%s %s %s %s: %s" % (method, url, status, answer, [e.message for e in errors])
        checked.append((method, path, status, answer.get("error")))
        answers.append(answer)
        return status, hdrs, answer

    secret = "docs-secret-0123456789abcdef"
    with server('limits = { user = { rate = 1, burst = 3 } }, token_secret = "%s",' % secret, workers=2,
                env={"SECKILLD_PAYMENT_SECRET": PAYMENT_SECRET}) as s:
        item, gated, later = ("docs-" + uuid.uuid4().hex[:10] for _ in range(3))
        # v1.2, the waiting room: a pass that lapses unused (pass_ttl_s 10), checked at the end
        lapse = "docs-lapse-" + uuid.uuid4().hex[:10]
        fast = {"admit_per_s": 100000, "pass_ttl_s": 10}  # no start: a joiner is admitted at once
        check(s, "PUT", "/admin/items/" + lapse, "/admin/items/{item_id}", {"stock": 5, "waiting_room": fast}, TOKEN, 200)
        _, _, lapsing = check(s, "POST", "/queue/join", "/queue/join", {"item_id": lapse, "user_id": "lapsing"}, None, 200)
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

        # v1.2, the order's life: an item with a price and a payment step; cancel, pay, and each refusal
        life, late = ("docs-life-" + uuid.uuid4().hex[:10] for _ in range(2))
        _, _, put = check(s, "PUT", "/admin/items/" + life, "/admin/items/{item_id}",
                          {"stock": 10, "price": 250, "pay_within_s": 300}, TOKEN, 200)
        assert put["item"]["price"] == 250 and put["item"]["pay_within_s"] == 300, put
        check(s, "PUT", "/admin/items/" + life, "/admin/items/{item_id}", {"stock": 10, "pay_within_s": 86401}, TOKEN,
              400)  # refused: nothing changed
        check(s, "PUT", "/admin/items/" + late, "/admin/items/{item_id}", {"stock": 10, "pay_within_s": 1}, TOKEN, 200)
        ids = [check(s, "POST", buy, buy, {"item_id": life, "user_id": u + "l%d" % i}, None, 200)[2]["order_id"]
               for i in range(3)]
        due = check(s, "POST", buy, buy, {"item_id": late, "user_id": u + "m"}, None, 200)[2]["order_id"]
        due_at = time.time() + 1
        _, _, o = check(s, "GET", "/order/" + ids[0], "/order/{order_id}", expect=200)  # queued (or persisted)
        assert o["order"]["expires_at"] is not None and o["order"]["status"] in ("queued", "created"), o
        cancel = "/order/{order_id}/cancel"
        _, _, c = check(s, "POST", "/order/%s/cancel" % ids[0], cancel, {"user_id": u + "l0"}, None, 200)
        assert c["order"]["status"] == "cancelled", c
        assert check(s, "POST", "/order/%s/cancel" % ids[0], cancel, {"user_id": u + "l0"}, None, 200)[2] == c
        check(s, "POST", "/order/%s/cancel" % ids[1], cancel, {"user_id": u + "l0"}, None, 404)  # not this user's
        check(s, "POST", "/order/nope/cancel", cancel, {"user_id": u + "l0"}, None, 404)
        check(s, "POST", "/order/%s/cancel" % ids[1], cancel, {}, None, 400)
        callback = "/payments/callback"

        def pay(order_id, amount, payment_id=None, expect=200, outcome=None, reason=None):
            payment_id = payment_id or "pay-" + uuid.uuid4().hex
            raw, headers = signed({"payment_id": payment_id, "order_id": order_id, "amount": amount})
            _, _, r = check(s, "POST", callback, callback, raw, headers, expect)
            assert r.get("outcome") == outcome and r.get("reason") == reason, r
            return payment_id, r

        first, paid = pay(ids[1], 250, outcome="paid")
        assert paid["order"]["status"] == "paid", paid
        assert pay(ids[1], 250, payment_id=first, outcome="paid")[1] == paid  # the same payment: the first answer
        pay(ids[1], 250, outcome="refund_due", reason="already_paid")        # a second payment
        pay(ids[0], 250, outcome="refund_due", reason="cancelled")           # a payment of a cancelled order
        pay(ids[2], 100, expect=422)                                         # amount_mismatch: 250 x 1
        pay("nope-" + uuid.uuid4().hex[:8], 250, expect=404)
        raw, headers = signed({"payment_id": "p-bad", "order_id": ids[2], "amount": 250}, "not-" + PAYMENT_SECRET)
        _, _, bad = check(s, "POST", callback, callback, raw, headers, 401)
        assert bad["error"] == "bad_signature", bad
        raw, headers = signed({"order_id": ids[2], "amount": 250})
        check(s, "POST", callback, callback, raw, headers, 400)
        _, _, refused = check(s, "POST", "/order/%s/cancel" % ids[1], cancel, {"user_id": u + "l1"}, None, 409)
        assert refused["error"] == "already_paid" and refused["order"]["status"] == "paid", refused
        time.sleep(max(0, due_at - time.time()) + 0.2)
        _, _, gone = check(s, "POST", "/order/%s/cancel" % due, cancel, {"user_id": u + "m"}, None, 409)
        assert gone["error"] == "expired" and gone["order"]["status"] == "expired", gone
        pay(due, 1, outcome="refund_due", reason="expired")                  # a late payment
        _, _, listed = check(s, "GET", "/orders?user_id=" + u + "l1", "/orders", expect=200)
        assert [o["status"] for o in listed["orders"]] == ["paid"], listed
        _, _, v = check(s, "GET", "/admin/items/" + life, "/admin/items/{item_id}", None, TOKEN, 200)
        assert v["item"]["paid"] == 1 and v["item"]["price"] == 250, v
        lib.wait_until(lambda: s.json("GET", "/admin/items/" + life, None, TOKEN)[1]["item"]["released"] == 1, 10,
                       what="the cancelled order's unit released")
        _, _, a = check(s, "GET", "/admin/items/%s/audit" % life, "/admin/items/{item_id}/audit", None, TOKEN, 200)
        assert a["audit"]["mysql"]["released_units"] == 1 and a["audit"]["drift"] == 0, a
        _, _, stats = check(s, "GET", "/admin/stats?item_id=" + life, "/admin/stats", None, TOKEN, 200)
        got = {k: stats["items"][0][k] for k in ("paid_orders", "cancelled_orders", "expired_orders", "refunds_due")}
        assert got == {"paid_orders": 1, "cancelled_orders": 1, "expired_orders": 0, "refunds_due": 2}, stats

        # v1.2, the waiting room: a join, the status in each state, the buy with the pass, and each refusal
        join, qstatus, page = "/queue/join", "/queue/status", "/queue/{item_id}"
        room, full, over = ("docs-room-" + uuid.uuid4().hex[:10] for _ in range(3))
        _, _, put = check(s, "PUT", "/admin/items/" + room, "/admin/items/{item_id}",
                          {"stock": 1, "waiting_room": fast}, TOKEN, 200)
        assert put["item"]["waiting_room"] == fast and (put["item"]["waiting"], put["item"]["admitted"]) == (0, 0), put
        for bad in ({"admit_per_s": 0}, {"admit_per_s": 5, "pass_ttl_s": 9}, {"admit_per_s": 100001}, "fast"):
            check(s, "PUT", "/admin/items/" + full, "/admin/items/{item_id}", {"stock": 1, "waiting_room": bad}, TOKEN,
                  400)
        check(s, "PUT", "/admin/items/" + full, "/admin/items/{item_id}",
              {"stock": 0, "waiting_room": {"admit_per_s": 5}}, TOKEN, 200)
        past = int(time.time() * 1000) - 60000
        check(s, "PUT", "/admin/items/" + over, "/admin/items/{item_id}",
              {"stock": 5, "starts_at": past, "ends_at": past + 1000, "waiting_room": fast}, TOKEN, 200)
        _, _, first = check(s, "POST", join, join, {"item_id": room, "user_id": u + "q1"}, None, 200)
        _, _, second = check(s, "POST", join, join, {"item_id": room, "user_id": u + "q2"}, None, 200)
        assert first["state"] in ("waiting", "admitted") and first["ticket"] != second["ticket"], (first, second)
        again = check(s, "POST", join, join, {"item_id": room, "user_id": u + "q1"}, None, 200)[2]
        assert again["ticket"] == first["ticket"], (first, again)  # one place per user: the same ticket
        check(s, "POST", join, join, {"item_id": room}, None, 400)
        # (each refusal by a user of its own: a join counts against the user's rate limit, burst 3 here)
        check(s, "POST", join, join, {"item_id": "nope-" + uuid.uuid4().hex[:8], "user_id": u + "q3"}, None, 404)
        _, _, none = check(s, "POST", join, join, {"item_id": item, "user_id": u + "q4"}, None, 409)
        assert none["error"] == "no_waiting_room", none
        _, _, gone = check(s, "POST", join, join, {"item_id": full, "user_id": u + "q5"}, None, 409)
        assert gone["error"] == "sold_out", gone
        _, _, late = check(s, "POST", join, join, {"item_id": over, "user_id": u + "q6"}, None, 403)
        assert late["error"] == "ended", late
        # and past it: 429 busy, as a buy
        for _ in range(3):
            s.json("POST", join, {"item_id": room, "user_id": u + "q7"})
        _, hdrs, busy = check(s, "POST", join, join, {"item_id": room, "user_id": u + "q7"}, None, 429)
        assert busy["error"] == "busy" and busy["limit"] == "user", busy

        def status_of(ticket, extra=""):
            return check(s, "GET", "%s?ticket=%s%s" % (qstatus, urllib.parse.quote(ticket), extra), qstatus,
                         expect=200)[2]
        admitted = lib.wait_until(lambda: (lambda a: a if a["state"] == "admitted" else None)(
            status_of(first["ticket"], "&item_id=%s&user_id=%sq1" % (room, u))), 10, what="the first joiner admitted")
        assert admitted["expires_at"] - admitted["admitted_at"] == 10000, admitted
        check(s, "GET", qstatus, qstatus, expect=400)
        forged = first["ticket"][:-1] + ("0" if first["ticket"][-1] != "0" else "1")
        _, _, bad = check(s, "GET", qstatus + "?ticket=" + urllib.parse.quote(forged), qstatus, expect=403)
        assert bad["error"] == "bad_ticket", bad
        _, _, bad = check(s, "GET", "%s?ticket=%s&user_id=%sq2" % (qstatus, urllib.parse.quote(first["ticket"]), u),
                          qstatus, expect=403)  # another user's ticket
        assert bad["error"] == "bad_ticket", bad
        # (other users than q1, which has two joins and its buy left in its burst of 3)
        _, _, refused = check(s, "POST", "/seckill/token", "/seckill/token", {"item_id": room, "user_id": u + "q8"},
                              None, 403)
        assert refused["error"] == "queue_required", refused
        _, _, refused = check(s, "POST", buy, buy, {"item_id": room, "user_id": u + "q9"}, None, 403)  # no pass
        assert refused["error"] == "bad_token", refused
        _, _, bought = check(s, "POST", buy, buy, {"item_id": room, "user_id": u + "q1", "token": admitted["token"]},
                             None, 200)
        # the last unit is gone: whoever still waits is told so
        lib.wait_until(lambda: status_of(second["ticket"])["state"] == "sold_out", 10, what="sold_out")
        _, _, v = check(s, "GET", "/admin/items/" + room, "/admin/items/{item_id}", None, TOKEN, 200)
        assert v["item"]["sold"] == 1 and v["item"]["admit_per_s"] == 100000, v
        _, _, stats = check(s, "GET", "/admin/stats?item_id=" + room, "/admin/stats", None, TOKEN, 200)
        assert {k: stats["items"][0][k] for k in ("waiting", "admitted", "admit_per_s")} == {
            "waiting": 0, "admitted": 3, "admit_per_s": 100000}, stats  # q1, q2 and q7 (its one place)
        status, headers, html = s.request("GET", "/queue/" + room)
        assert status == 200 and str(status) in d["paths"][page]["get"]["responses"], status
        assert headers["content-type"] == "text/html; charset=utf-8" and b"<html" in html, headers
        check(s, "GET", "/queue/bad%20id", page, expect=400)
        # the pass given at the start lapsed unused
        lib.wait_until(lambda: status_of(lapsing["ticket"])["state"] == "expired", 15, what="the pass expired")
        s.assert_no_errors_in_log()
    assert len(checked) >= 30, checked
    assert {c[1:] for c in checked} >= {
        ("/queue/join", 200, None), ("/queue/join", 400, "bad_request"), ("/queue/join", 404, "unknown_item"),
        ("/queue/join", 409, "no_waiting_room"), ("/queue/join", 409, "sold_out"), ("/queue/join", 403, "ended"),
        ("/queue/status", 200, None), ("/queue/status", 400, "bad_request"), ("/queue/status", 403, "bad_ticket"),
        ("/queue/{item_id}", 400, "bad_request"), ("/seckill/token", 403, "queue_required")}, checked
    states = {a["state"] for a in answers if a.get("state")}
    assert states == {"waiting", "admitted", "sold_out", "expired"}, states  # every state's answer was checked
    for path, status in [(cancel, 200), (cancel, 404), (cancel, 409), (cancel, 400), (callback, 200), (callback, 401),
                         (callback, 404), (callback, 422), (callback, 400)]:
        assert ("POST", path, status) in {c[:3] for c in checked}, (path, status)


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
        for path in ["/seckill/add", "/seckill/token", "/admin/items/{item_id}/audit", "/admin/stats", "/healthz",
                     "/order/{order_id}/cancel", "/payments/callback", "/queue/join", "/queue/status"]:
            assert path in dom, path + " not rendered by Swagger UI"
        s.assert_no_errors_in_log()


# ===== the dashboard =====

def section(dom, item):
    """the dashboard's section of one item"""
    at = dom.find('data-item="%s"' % item)
    assert at >= 0, "the item is not on the dashboard:\n" + dom[-3000:]
    return dom[at:dom.find("</section>", at)]


def rendered(dom, item):
    """{field: text} of the dashboard's numbers for one item"""
    return dict(re.findall(r'data-field="([a-z_0-9]+)">([^<]*)<', section(dom, item)))


@lib.normal_only("the dashboard's JavaScript in Chromium against /admin/stats and /admin/items: script behaviour; the "
                 "static files and stats routes it reads run under ASan in this file's other cases")
def test_dashboard_shows_a_running_sale_in_headless_chromium():
    stock = 1500
    with server('token_secret = "%s",' % QUEUE_SECRET, workers=2, env={"SECKILLD_PAYMENT_SECRET": PAYMENT_SECRET}) as s:
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
        for field in ("paid_orders", "cancelled_orders", "expired_orders", "refunds_due"):
            assert int(shown[field]) == 0, (field, shown)

        # v1.2, the order's life: three orders paid, two cancelled (one paid afterwards), one paid twice; a second
        # item's two orders expire unpaid and one is paid late. The page shows MySQL's counts since each set-up.
        def pay(order_id):
            raw, headers = signed({"payment_id": "pay-" + uuid.uuid4().hex, "order_id": order_id, "amount": 100})
            status, r = s.json("POST", "/payments/callback", raw, headers)
            assert status == 200, (status, r)
            return r["outcome"]

        def cancel(order):
            status, r = s.json("POST", "/order/%s/cancel" % order["order_id"], {"user_id": order["user_id"]})
            assert status == 200 and r["order"]["status"] == "cancelled", (status, r)

        bought = [json.loads(body) for st, body in results if st == 200][:5]
        assert [pay(o["order_id"]) for o in bought[:3]] == ["paid"] * 3
        cancel(bought[3])
        cancel(bought[4])
        assert pay(bought[3]["order_id"]) == "refund_due" and pay(bought[0]["order_id"]) == "refund_due"
        lapsing = "dash-life-" + uuid.uuid4().hex[:10]
        assert s.json("PUT", "/admin/items/" + lapsing, {"stock": 5, "pay_within_s": 1}, TOKEN)[0] == 200
        unpaid = []
        for user in ("x1", "x2"):
            status, r = s.json("POST", "/seckill/add", {"item_id": lapsing, "user_id": user})
            assert status == 200, (status, r)
            unpaid.append(r["order_id"])
        lib.wait_until(lambda: s.json("GET", "/admin/items/" + lapsing, None, TOKEN)[1]["item"]["released"] == 2, 15,
                       what="the second item's orders expired and released")
        assert pay(unpaid[0]) == "refund_due"
        lib.wait_until(lambda: s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]["released"] == 2, 10,
                       what="the cancelled orders' units released")
        final = s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]
        shown = rendered(chromium("--virtual-time-budget=3000", "--dump-dom", url), item)
        assert {f: int(shown[f]) for f in ("paid_orders", "cancelled_orders", "expired_orders", "refunds_due")} == {
            "paid_orders": 3, "cancelled_orders": 2, "expired_orders": 0, "refunds_due": 2}, shown
        assert int(shown["sold"]) == final["sold"] == accepted - 2, (shown, final)  # released: back on sale
        assert int(shown["stock_left"]) == final["stock_left"], (shown, final)
        other_url = "http://127.0.0.1:%d/dashboard#token=test-token&item=%s" % (s.port, lapsing)
        other = rendered(chromium("--virtual-time-budget=3000", "--dump-dom", other_url), lapsing)
        assert {f: int(other[f]) for f in ("paid_orders", "cancelled_orders", "expired_orders", "refunds_due")} == {
            "paid_orders": 0, "cancelled_orders": 0, "expired_orders": 2, "refunds_due": 1}, other
        assert int(other["sold"]) == 0 and int(other["stock_left"]) == 5, other

        # v1.2, the waiting room: an item with one shows how many wait, how many were let in, and the pace; an item
        # without one shows none of it. Two rooms whose numbers hold still: four joined a sale that starts in an hour
        # (the draw is open: all wait), four joined one without a start (each let in at once at 100 a second)
        def dom_of(shown_item):
            return chromium("--virtual-time-budget=3000", "--dump-dom",
                            "http://127.0.0.1:%d/dashboard#token=test-token&item=%s" % (s.port, shown_item))
        assert "waiting" not in s.json("GET", "/admin/stats?item_id=" + item, None, TOKEN)[1]["items"][0]
        assert re.search(r'<div class="room" hidden(="")?><label>waiting</label>', section(dom_of(item), item))
        drawing, open_room = ("dash-room-" + uuid.uuid4().hex[:10] for _ in range(2))
        later = s.json("GET", "/time")[1]["now"] + 3600000
        for room, extra in ((drawing, {"starts_at": later}), (open_room, {})):
            assert s.json("PUT", "/admin/items/" + room, dict(extra, stock=10, waiting_room={"admit_per_s": 100}),
                          TOKEN)[0] == 200
            for u in ("w1", "w2", "w3", "w4"):
                status, r = s.json("POST", "/queue/join", {"item_id": room, "user_id": u})
                assert status == 200 and r["state"] == "waiting", (status, r)

        def room_shown(room):
            stats = s.json("GET", "/admin/stats?item_id=" + room, None, TOKEN)[1]["items"][0]
            view = s.json("GET", "/admin/items/" + room, None, TOKEN)[1]["item"]
            dom = dom_of(room)
            shown = rendered(dom, room)
            assert re.search(r'<div class="room"><label>waiting</label>', section(dom, room)), "the room is hidden"
            return {f: stats[f] for f in ("waiting", "admitted", "admit_per_s")}, \
                {f: view[f] for f in ("waiting", "admitted", "admit_per_s")}, \
                {f: int(shown[f]) for f in ("waiting", "admitted", "admit_per_s")}
        waiting = {"waiting": 4, "admitted": 0, "admit_per_s": 100}
        assert room_shown(drawing) == (waiting, waiting, waiting)
        lib.wait_until(lambda: s.json("GET", "/admin/stats?item_id=" + open_room, None, TOKEN)[1]["items"][0][
            "admitted"] == 4, 10, what="the four let in")
        admitted = {"waiting": 0, "admitted": 4, "admit_per_s": 100}
        assert room_shown(open_room) == (admitted, admitted, admitted)
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


# ===== the waiting room's page =====

def server_ms(s):
    return s.json("GET", "/time")[1]["now"]


def stored(b, item):
    """what the page keeps of its place in sessionStorage"""
    return b.eval("JSON.parse(sessionStorage.getItem(%s) || '{}')" % json.dumps("seckilld.queue." + item))


def page_state(b):
    return b.eval("document.body.dataset.state")


@lib.normal_only("the waiting room's page (JavaScript) in Chromium, driven over the DevTools protocol: script "
                 "behaviour; its routes' C paths run under ASan in this file's other cases")
def test_queue_page_from_joining_to_a_bought_order_in_headless_chromium():
    """a person opens /queue/ITEM#user=U before the sale starts, clicks Join, waits (the position only falls, the
    bar only fills, a reload keeps the place), is admitted at the start in the drawn order, clicks Buy: the order
    is the user's, the item sold 1 unit, the user bought 1"""
    import browser
    with server('token_secret = "%s",' % QUEUE_SECRET, workers=2) as s, browser.Chromium() as b:
        item, user = "room-" + uuid.uuid4().hex[:10], "pg-" + uuid.uuid4().hex[:8]
        # the start leaves room for ten joins and a page's load and click (the browser is up already); the draw is
        # what this case goes through, so a join after the start would be a failure of the machine, said below
        starts_at = server_ms(s) + 5000
        room = {"admit_per_s": 5, "pass_ttl_s": 120}
        status, put = s.json("PUT", "/admin/items/" + item, {"stock": 5, "limit_per_user": 1, "starts_at": starts_at,
                                                             "waiting_room": room}, TOKEN)
        assert status == 200 and put["item"]["waiting_room"] == room, put
        status, headers, html = s.request("GET", "/queue/" + item)
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8", (status, headers)
        assert b"<script src" not in html and b"/queue/status" in html, "the page's script is not inlined"
        assert b"https://" not in html and b"http://" not in html, "the page loads nothing from elsewhere"
        # ten others in the draw before the person: the drawn order puts them anywhere among the eleven
        for i in range(10):
            status, j = s.json("POST", "/queue/join", {"item_id": item, "user_id": "other-%d" % i})
            assert status == 200 and j["state"] == "waiting", (status, j)

        b.goto("http://127.0.0.1:%d/queue/%s#user=%s" % (s.port, item, user))
        assert page_state(b) == "join" and b.eval("document.getElementById('user').value") == user
        assert b.text("#item") == item
        b.click("#join")
        b.wait("document.body.dataset.state === 'waiting'", what="the place shown")
        joined = stored(b, item)
        assert joined["user"] == user and joined["ticket"], joined
        assert joined["ticket"].startswith("q1~d~"), "joined after the start (a machine too slow for 5 s?)"
        first = int(b.text("#position"))
        assert 1 <= first <= 11 and re.fullmatch(r"\d+ s|< 1 s|\d+ min", b.text("#wait")), (first, b.text("#wait"))
        # a reload keeps the place: no second join, the same user, still in the room
        b.reload()
        assert page_state(b) in ("waiting", "admitted") and b.text("#who") == user, page_state(b)
        assert stored(b, item)["user"] == user and stored(b, item)["ticket"], stored(b, item)
        counts = s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]
        assert counts["waiting"] + counts["admitted"] == 11, counts  # one place each, none twice

        seen = []  # (position, bar) while waiting, as the page showed them

        def admitted():
            shown = b.eval("[document.body.dataset.state, document.getElementById('position').textContent,"
                           " document.getElementById('progress').value]")
            if shown[0] == "waiting":
                seen.append((int(shown[1]), shown[2]))
            return shown[0] == "admitted"
        lib.wait_until(admitted, 60, interval=0.05, what="the page admitted")
        assert seen, "the page never showed the wait"
        positions, bars = [p for p, _ in seen], [v for _, v in seen]
        assert positions == sorted(positions, reverse=True) and positions[-1] >= 1, positions
        assert bars == sorted(bars) and 0 <= bars[0] and bars[-1] < 1, bars
        assert server_ms(s) >= starts_at
        # the page keeps the newest ticket: a pre-start ticket ("d", no place) was swapped for the drawn place's
        kept = stored(b, item)
        assert kept["ticket"].startswith("q1~p~"), (joined, kept)
        status, now = s.json("GET", "/queue/status?ticket=" + kept["ticket"])
        assert status == 200 and now["state"] == "admitted" and now["token"] == kept["token"], (now, kept)
        assert b.visible("#buy") and not b.visible("#waiting") and re.fullmatch(r"\d+ s|\d+ min \d+ s",
                                                                               b.text("#pass-left"))

        b.click("#buy")
        b.wait("document.body.dataset.state === 'bought'", what="the order shown")
        order_id = b.text("#order-id")
        status, o = s.json("GET", "/order/" + order_id)
        assert status == 200 and (o["order"]["user_id"], o["order"]["item_id"]) == (user, item), (status, o)
        # the page follows the order until MySQL has it
        b.wait("document.getElementById('order-status').textContent === 'created'", what="the order created")
        b.reload()  # the order survives a reload too
        assert page_state(b) == "bought" and b.text("#order-id") == order_id
        assert not b.errors, b.errors
        b.screenshot(os.path.join(lib.BUILD, "queue.png"))

        view = s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]
        assert view["sold"] == 1 and view["orders_persisted"] == 1 and view["stock_left"] == 4, view
        assert lib.redis_cli("HGET", "seckill:{%s}:users" % item, user) == "1"
        status, mine = s.json("GET", "/orders?user_id=" + user)
        assert [o["order_id"] for o in mine["orders"]] == [order_id], mine


@lib.normal_only("the waiting room's page (JavaScript) in Chromium: script behaviour, no C path of its own")
def test_queue_page_shows_refusals_sold_out_and_expiry():
    import browser
    with server('token_secret = "%s",' % QUEUE_SECRET) as s:
        plain, empty, brief = ("room-" + uuid.uuid4().hex[:10] for _ in range(3))
        room = {"admit_per_s": 5, "pass_ttl_s": 10}
        assert s.json("PUT", "/admin/items/" + plain, {"stock": 5}, TOKEN)[0] == 200
        assert s.json("PUT", "/admin/items/" + empty, {"stock": 0, "waiting_room": room}, TOKEN)[0] == 200
        base = "http://127.0.0.1:%d/queue/" % s.port
        assert s.request("GET", "/queue/bad%20id")[0] == 400
        with browser.Chromium() as b:
            # what a user types is never markup: the fragment's user is shown as text
            bad = '<img src=x onerror="window.__pwned=1">'
            b.goto(base + plain + "#user=" + urllib.parse.quote(bad))
            assert b.text("#who") == bad and b.eval("document.querySelectorAll('img').length") == 0
            b.click("#join")  # an invalid user id: the server's 400, in words
            b.wait("document.getElementById('message').textContent.includes('That was refused')")
            assert page_state(b) == "join" and b.eval("window.__pwned") is None
            b.type("#user", "u1")
            b.click("#join")
            b.wait("document.getElementById('message').textContent.includes('has no waiting room')")
            b.goto(base + "nope-" + uuid.uuid4().hex[:8] + "#user=u1")
            b.click("#join")
            b.wait("document.getElementById('message').textContent.includes('no such item')")
            assert page_state(b) == "join"
            # nothing left: sold out at once
            b.goto(base + empty + "#user=u1")
            b.click("#join")
            b.wait("document.body.dataset.state === 'sold_out'")
            assert b.text("#over-text").startswith("Sold out")
            # a forged ticket: refused, the place dropped, join again. Nobody is ahead and the item has no start: the
            # first place is admitted at the set-up, and its pass lapses 10 s later
            assert s.json("PUT", "/admin/items/" + brief, {"stock": 5, "waiting_room": room}, TOKEN)[0] == 200
            b.goto(base + brief + "#user=u2")
            b.click("#join")
            b.wait("document.body.dataset.state === 'admitted'", what="admitted at once (no start, nobody ahead)")
            key = json.dumps("seckilld.queue." + brief)
            b.eval("(() => { const s = JSON.parse(sessionStorage.getItem(%s)); s.ticket = s.ticket.slice(0, -1) +"
                   " (s.ticket.endsWith('0') ? '1' : '0'); s.token = null; sessionStorage.setItem(%s,"
                   " JSON.stringify(s)); })()" % (key, key))
            b.reload()
            b.wait("document.body.dataset.state === 'join' && "
                   "document.getElementById('message').textContent.includes('ticket was refused')")
            # a pass not used within pass_ttl_s expires
            b.click("#join")  # the same place: admitted, or its pass already lapsed on a slow machine
            b.wait("['admitted', 'expired'].includes(document.body.dataset.state)")
            b.wait("document.body.dataset.state === 'expired'", what="the pass expired (10 s)")
            assert b.text("#over-text").startswith("Your pass expired")
            assert not b.errors, b.errors
        assert s.json("GET", "/admin/items/" + brief, None, TOKEN)[1]["item"]["sold"] == 0


@lib.normal_only("the waiting room's page (JavaScript) in Chromium: script behaviour, no C path of its own")
def test_queue_page_keeps_its_place_through_a_sell_out_and_buys_a_unit_that_came_back():
    """v1.2's order's life gives units back (a cancel, an unpaid order's expiry): a page told sold_out while it holds
    a place keeps checking, goes back to admitted when the unit is back, and buys it"""
    import browser
    with server('token_secret = "%s",' % QUEUE_SECRET) as s:
        item = "room-" + uuid.uuid4().hex[:10]
        room = {"admit_per_s": 100000, "pass_ttl_s": 300}  # no start: a joiner is admitted at once
        assert s.json("PUT", "/admin/items/" + item, {"stock": 1, "pay_within_s": 300, "waiting_room": room},
                      TOKEN)[0] == 200
        with browser.Chromium() as b:
            b.goto("http://127.0.0.1:%d/queue/%s#user=page" % (s.port, item))
            b.click("#join")
            b.wait("document.body.dataset.state === 'admitted'", what="the page admitted")
            # someone else, admitted too, buys the only unit first
            status, other = s.json("POST", "/queue/join", {"item_id": item, "user_id": "other"})
            assert status == 200, (status, other)
            admitted = lib.wait_until(lambda: (lambda a: a if a["state"] == "admitted" else None)(
                s.json("GET", "/queue/status?ticket=" + urllib.parse.quote(other["ticket"]))[1]), 10,
                what="the other admitted")
            status, order = s.json("POST", "/seckill/add", {"item_id": item, "user_id": "other",
                                                            "token": admitted["token"]})
            assert status == 200, (status, order)
            b.wait("document.body.dataset.state === 'sold_out'", what="the page told sold_out")
            assert "keeps your place" in b.text("#over-text") and stored(b, item)["ticket"]
            # the other cancels: the unit is back, and the page, still holding its place, is admitted again
            status, cancelled = s.json("POST", "/order/%s/cancel" % order["order_id"], {"user_id": "other"})
            assert status == 200 and cancelled["order"]["status"] == "cancelled", (status, cancelled)
            b.wait("document.body.dataset.state === 'admitted'", what="the page admitted again")
            b.click("#buy")
            b.wait("document.body.dataset.state === 'bought'", what="the unit that came back bought")
            status, mine = s.json("GET", "/order/" + b.text("#order-id"))
            assert status == 200 and mine["order"]["user_id"] == "page", (status, mine)
            assert not b.errors, b.errors
        lib.wait_until(lambda: s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]["released"] == 1, 10,
                       what="the cancelled unit released")
        view = s.json("GET", "/admin/items/" + item, None, TOKEN)[1]["item"]
        assert view["sold"] == 1 and view["stock_left"] == 0, view


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
