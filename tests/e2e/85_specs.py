"""Handler behaviour as data (in the spirit of Test::Nginx): every *.spec file in tests/e2e/specs is a list of
cases — a request, the expected status, body fields and log lines — run against the shipped scripts.

    === a title
    --- items: A stock=10 limit=2, B stock=5 starts_in=3600000
    --- request
    POST /seckill/add
    {"item_id": "$A", "user_id": "u1"}
    --- headers
    Authorization: Bearer $TOKEN
    --- status: 409
    --- body: {"ok": false, "error": "limit_exceeded"}
    --- error_log: some regex
    --- repeat: 2

`items` sets items up (fresh ids, named $A... in the case; options stock, limit, starts_in/ends_in in ms from now,
starts_at/ends_at absolute ms). `body` is a JSON object whose fields must all be equal in the answer ("*" means any
non-empty value). Without `error_log`, the case must log no error. `repeat` sends the request N times and checks the
last answer. Adding a case is one block."""
import glob
import json
import os
import re
import time
import uuid

import lib

SPECS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "specs")
CONF = os.path.join(lib.SCRIPTS, "sale.conf")
TOKEN = "test-token"


def parse(path):
    cases, case, section = [], None, None
    for raw in open(path):
        line = raw.rstrip("\n")
        if line.startswith("=== "):
            case = {"title": line[4:].strip(), "file": os.path.basename(path), "request": [], "headers": []}
            cases.append(case)
            section = None
        elif line.startswith("--- "):
            key, _, value = line[4:].partition(":")
            key = key.strip()
            if value.strip():
                case[key] = value.strip()
                section = None
            else:
                section = key
        elif case is not None and section in ("request", "headers") and line.strip():
            case[section].append(line)
        elif case is not None and section == "body":
            case["body"] = (case.get("body", "") + "\n" + line).strip()
    return cases


def set_up_items(s, spec):
    names = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, *opts = part.split()
        body = {"stock": 1}
        for opt in opts:
            k, _, v = opt.partition("=")
            v = int(v)
            if k == "stock":
                body["stock"] = v
            elif k == "limit":
                body["limit_per_user"] = v
            elif k in ("starts_at", "ends_at"):
                body[k] = v
            elif k in ("starts_in", "ends_in"):
                body[k.replace("_in", "_at")] = int(time.time() * 1000) + v
            else:
                raise AssertionError("unknown item option " + k)
        item = "spec-" + uuid.uuid4().hex[:12]
        st, r = s.json("PUT", "/admin/items/" + item, body, {"Authorization": "Bearer " + TOKEN})
        assert st == 200, (st, r)
        names[name] = item
    return names


def expand(text, names):
    text = text.replace("$TOKEN", TOKEN).replace("$UUID", str(uuid.uuid4()))
    text = re.sub(r"\$X\{(\d+)\}", lambda m: "x" * int(m.group(1)), text)
    for name, item in sorted(names.items(), key=lambda kv: -len(kv[0])):
        text = text.replace("$" + name, item)
    return text


def matches(expected, actual):
    if expected == "*":
        return actual not in (None, "")
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and matches(v, actual[k]) for k, v in expected.items())
    return expected == actual


def run_case(s, case):
    names = set_up_items(s, case.get("items", ""))
    method, _, path = expand(case["request"][0], names).partition(" ")
    body = expand("\n".join(case["request"][1:]), names) if len(case["request"]) > 1 else None
    headers = dict(h.split(":", 1) for h in (expand(h, names) for h in case["headers"]))
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    log_before = len(s.log())
    for _ in range(int(case.get("repeat", 1))):
        status, hdrs, data = s.request(method, path.strip(), body, headers)
    where = "%s: %s" % (case["file"], case["title"])
    assert status == int(case["status"]), "%s: status %s, body %r" % (where, status, data[:300])
    if "body" in case:
        want = json.loads(expand(case["body"], names))
        got = json.loads(data)
        assert matches(want, got), "%s: body %s does not match %s" % (where, got, want)
    if "error_log" in case:
        # the line may be written after the answer (a spawned coroutine, a loaded machine): wait for it
        try:
            lib.wait_until(lambda: re.search(case["error_log"], s.log()[log_before:]), 10, interval=0.02,
                           what="a log line matching %r" % case["error_log"])
        except AssertionError:
            raise AssertionError("%s: no log line matches %r" % (where, case["error_log"]))
    else:
        time.sleep(0.05)
        new_log = s.log()[log_before:]
        errors = [l for l in new_log.splitlines() if "[error]" in l]
        assert not errors, "%s: errors logged:\n%s" % (where, "\n".join(errors))


def test_every_spec_case():
    cases = [c for f in sorted(glob.glob(os.path.join(SPECS, "*.spec"))) for c in parse(f)]
    assert len(cases) >= 30, "only %d spec cases found" % len(cases)
    with lib.Server(os.path.join(lib.ROOT, "scripts"), workers=2, conf=CONF, wait_healthy=True) as s:
        s.allowed_errors = [r"injected by a spec"]
        for case in cases:
            run_case(s, case)
    print("     %d cases from %d files" % (len(cases), len(glob.glob(os.path.join(SPECS, "*.spec")))))


lib.main(globals())
