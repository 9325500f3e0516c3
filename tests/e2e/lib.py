"""End-to-end test helpers: start the real seckilld binary against the harness's services and talk HTTP to it.

Tests are plain functions named test_* in a file that ends with `lib.main(globals())`. Each test reads like a
specification: scripts, requests, the expected status and body, and "no error in the log" where that matters.
Services (redis-server, mariadbd) come from tests/harness/services.sh through the SECKILLD_* environment.
"""
import asyncio
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("SK_BUILD_DIR", os.path.join(ROOT, "build"))
BINARY = os.path.join(BUILD, "seckilld")
SCRIPTS = os.path.join(ROOT, "tests", "e2e", "scripts")


def free_port():
    """a free loopback port below the kernel's ephemeral range, as the harness picks its services' ports: the
    ephemeral range is where the embedded Kafka mock's brokers (and every client socket) get theirs, so a port taken
    from there and released could be handed to a mock broker before seckilld listens on it"""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral_lo = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_lo = 32768
    for _ in range(200):
        port = random.randint(10000, ephemeral_lo - 1)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise AssertionError("no free port below %d" % ephemeral_lo)


def require_env(*names):
    """Fails (never skips silently) when the harness did not provide a service."""
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise AssertionError("service environment missing: %s (run through tests/run.sh, which starts the services)"
                             % ", ".join(missing))


class Server:
    """One seckilld process on a free loopback port."""

    def __init__(self, scripts, workers=1, env=None, conf=None, args=(), wait_healthy=False, start=True, binary=None,
                 cwd=None):
        self.binary = binary or BINARY
        self.cwd = cwd or ROOT
        self.port = free_port()
        self.scripts = scripts if os.path.isabs(scripts) else os.path.join(SCRIPTS, scripts)
        self.env = dict(os.environ)
        self.env.update({
            "SECKILLD_LISTEN": "127.0.0.1:%d" % self.port,
            "SECKILLD_WORKERS": str(workers),
            "SECKILLD_SCRIPTS": self.scripts,
            "SECKILLD_KAFKA": os.environ.get("SECKILLD_KAFKA", "embedded"),
        })
        self.env.update(env or {})
        self.conf = conf or os.path.join(ROOT, "conf", "seckilld.conf")
        self.args = list(args)
        self.logfile = tempfile.NamedTemporaryFile(prefix="seckilld-", suffix=".log", delete=False)
        self.proc = None
        if start:
            self.start(wait_healthy)

    def start(self, wait_healthy=False, timeout=15):
        self.proc = subprocess.Popen([self.binary, "-c", self.conf] + self.args, cwd=self.cwd, env=self.env,
                                     stdout=self.logfile, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("seckilld exited with %s at start-up:\n%s" % (self.proc.returncode, self.log()))
            try:
                status, _, _ = self.request("GET", "/healthz", timeout=2)
                if not wait_healthy or status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError("seckilld did not answer within %ss:\n%s" % (timeout, self.log()))

    def request(self, method, path, body=None, headers=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            conn.close()

    def json(self, method, path, body=None, headers=None, timeout=10):
        status, hdrs, data = self.request(method, path, body, headers, timeout)
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            raise AssertionError("%s %s: answer is not JSON: %r" % (method, path, data[:200]))

    def metrics(self):
        """Prometheus text -> {"name{labels}": value}"""
        status, _, data = self.request("GET", "/metrics")
        assert status == 200, status
        out = {}
        for line in data.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def metric(self, prefix):
        """sum of every series whose name{labels} starts with prefix"""
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))

    def send(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("seckilld did not stop within %ss after %s:\n%s" % (timeout, sig, self.log()[-3000:]))

    def log(self):
        with open(self.logfile.name, errors="replace") as f:
            return f.read()

    def assert_no_errors_in_log(self, allow=()):
        bad = [l for l in self.log().splitlines()
               if ("[error]" in l or "ERROR: AddressSanitizer" in l or "runtime error:" in l)
               and not any(re.search(a, l) for a in allow)]
        assert not bad, "errors in the log:\n" + "\n".join(bad[:20])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        code = self.stop()
        if exc[0] is None and self.env.get("SK_CHECK_EXIT", "1") == "1":
            assert code == 0, "seckilld exited with %s:\n%s" % (code, self.log()[-3000:])
            self.assert_no_errors_in_log(allow=getattr(self, "allowed_errors", ()))
        os.unlink(self.logfile.name)
        return False


# ===== concurrent HTTP from one Python process (asyncio, raw HTTP/1.1, keep-alive) =====

async def _read_response(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    length = 0
    for l in lines[1:]:
        if l.lower().startswith("content-length:"):
            length = int(l.split(":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return status, body


class KafkaMock:
    """a standalone librdkafka mock cluster (seckilld --kafka-mock FILE) that several seckilld processes share;
    .bootstraps is what SECKILLD_KAFKA takes"""

    def __init__(self):
        self.file = tempfile.mktemp(prefix="sk-kafka-bootstraps-")
        self.proc = subprocess.Popen([BINARY, "--kafka-mock", self.file], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        assert line and os.path.exists(self.file), "the standalone mock did not start (rc %s)" % self.proc.poll()
        self.bootstraps = line

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.terminate()
        self.proc.wait(10)
        if os.path.exists(self.file):
            os.unlink(self.file)


def _encode(method, path, body, headers):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    body = body.encode() if isinstance(body, str) else (body or b"")
    h = "".join("%s: %s\r\n" % kv for kv in (headers or {}).items())
    return ("%s %s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n%s\r\n" % (method, path, len(body), h)).encode() + body


async def _worker(port, queue, results, timeout):
    reader = writer = None
    while True:
        try:
            i, (method, path, body, headers) = queue.get_nowait()
        except asyncio.QueueEmpty:
            break
        t0 = time.monotonic()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(_encode(method, path, body, headers))
            status, data = await asyncio.wait_for(_read_response(reader), timeout)
            results[i] = (status, data, time.monotonic() - t0)
        except Exception as e:  # a failed or dropped request is a result too
            results[i] = (None, repr(e).encode(), time.monotonic() - t0)
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


def run_concurrently(port, requests, concurrency, timeout=30):
    """requests: list of (method, path, body, headers). Returns [(status or None, body, seconds)] in order."""
    async def go():
        queue = asyncio.Queue()
        for i, r in enumerate(requests):
            queue.put_nowait((i, r))
        results = [None] * len(requests)
        await asyncio.gather(*[_worker(port, queue, results, timeout) for _ in range(concurrency)])
        return results
    return asyncio.run(go())


def buy_out(port, item, prefix, n, concurrency):
    """n buys of `item` by fresh users PREFIX-0.., `concurrency` at a time; every answer must be 200 or 409 sold_out.
    Returns {order_id: quantity} of the 200s."""
    reqs = [("POST", "/seckill/add", {"item_id": item, "user_id": "%s-%d" % (prefix, i)}, None) for i in range(n)]
    got = {}
    for st, body, _ in run_concurrently(port, reqs, concurrency=concurrency, timeout=30):
        b = json.loads(body)
        if st == 200:
            got[b["order_id"]] = b["quantity"]
        else:
            assert (st, b["error"]) == (409, "sold_out"), (st, b)
    return got


def statuses(results):
    """Answers counted by status, a 409 by its error code ("409 sold_out"): results are tuples whose first two
    values are the status and the body (hammer's, or a test's (status, body, headers))."""
    c = {}
    for r in results:
        st, body = r[0], r[1]
        key = st if st != 409 else "409 " + json.loads(body)["error"]
        c[key] = c.get(key, 0) + 1
    return c


def hammer(port, make_request, connections, seconds, pace=None, out=None, stop=None):
    """Keeps `connections` keep-alive connections busy for `seconds`. Returns a list of (status, body); a request
    that failed (connection refused or dropped) is (None, reason). pace(status), when given, says how long a
    connection waits after an answer before its next request, or None: that connection stops. out: the list to
    append to, for a caller that reads it while this runs (another thread). stop: a threading.Event that ends it
    before `seconds` (then `seconds` only bounds a hang)."""
    async def conn_loop(out, stop_at):
        reader = writer = None
        n = 0
        while time.monotonic() < stop_at and not (stop and stop.is_set()):
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                method, path, body, headers = make_request(n)
                n += 1
                writer.write(_encode(method, path, body, headers))
                answer = await asyncio.wait_for(_read_response(reader), 10)
                out.append(answer)
                wait = pace(answer[0]) if pace else 0
                if wait is None:
                    break
                if wait:
                    await asyncio.sleep(wait)
            except Exception as e:
                out.append((None, repr(e).encode()))
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.05)
        if writer is not None:
            writer.close()

    async def go():
        stop_at = time.monotonic() + seconds
        await asyncio.gather(*[conn_loop(results, stop_at) for _ in range(connections)])
        return results
    results = [] if out is None else out
    return asyncio.run(go())


# ===== service access for assertions =====

def services(cmd):
    """tests/harness/services.sh CMD on the suite's services: redis-stop/-start, mysql-stop/-start (crash, restart)"""
    require_env("SK_SERVICES_SH", "SK_SERVICES_DIR")
    subprocess.run(["bash", os.environ["SK_SERVICES_SH"], cmd, os.environ["SK_SERVICES_DIR"]], check=True,
                   capture_output=True, timeout=60)


def read_cluster_env(services_dir):
    """SK_REDIS_CLUSTER_URL and _PORTS from the env file the harness wrote in services_dir"""
    out = {}
    with open(os.path.join(services_dir, "env")) as f:
        for line in f:
            if line.startswith("export SK_REDIS_CLUSTER_"):
                name, _, value = line[len("export "):].strip().partition("=")
                out[name] = value.replace("\\,", ",").replace("\\ ", " ")
    return out


class ReplicatedCluster:
    """A Redis Cluster of a test's own, with a replica per master (services.sh cluster-start with
    SK_CLUSTER_REPLICAS=1) in SK_SERVICES_DIR/name: its url and its six ports; node_stop(n) SIGKILLs node n (1-based,
    in ports' order) and node_start(n) starts it again. Stopped on leaving the with block."""

    def __init__(self, name):
        require_env("SK_SERVICES_DIR", "SK_SERVICES_SH")
        self.sh = os.environ["SK_SERVICES_SH"]
        self.dir = os.path.join(os.environ["SK_SERVICES_DIR"], name)

    def _services(self, *args, **kw):
        return subprocess.run(["bash", self.sh] + list(args), capture_output=True, **kw)

    def __enter__(self):
        self._services("cluster-start", self.dir, check=True, timeout=120,
                       env=dict(os.environ, SK_CLUSTER_REPLICAS="1"))
        try:
            info = read_cluster_env(self.dir)
            self.url = info["SK_REDIS_CLUSTER_URL"]
            self.ports = [int(p) for p in info["SK_REDIS_CLUSTER_PORTS"].split()]
            assert len(self.ports) == 6, self.ports
        except BaseException:
            self.__exit__()
            raise
        return self

    def node_stop(self, n):
        self._services("cluster-node-stop", self.dir, str(n), check=True, timeout=60)

    def node_start(self, n):
        self._services("cluster-node-start", self.dir, str(n), check=True, timeout=60)

    def pid(self, n):
        """the process id of node n (1-based, in ports' order)"""
        with open(os.path.join(self.dir, "cluster", "n%d" % n, "redis.pid")) as f:
            return int(f.read().strip())

    def __exit__(self, *exc):
        self._services("cluster-stop", self.dir, timeout=120)


def cluster_cli(port, *args):
    """redis-cli against one cluster node (no redirections followed), its output stripped"""
    return subprocess.run(["redis-cli", "-p", str(port), "--raw"] + [str(a) for a in args], check=True,
                          capture_output=True, text=True, timeout=10).stdout.strip()


def cluster_nodes(port):
    """CLUSTER NODES as the node on port sees it: [{id, port, flags, master, slots}]"""
    out = []
    for line in cluster_cli(port, "CLUSTER", "NODES").splitlines():
        f = line.split()
        out.append({"id": f[0], "port": int(f[1].split(":")[1].split("@")[0]), "flags": f[2], "master": f[3],
                    "slots": f[8:]})
    return out


def slot_owner(port, slot):
    """the port of the master serving slot, as the node on port sees it (None: no live master does)"""
    for n in cluster_nodes(port):
        if "master" not in n["flags"] or "fail" in n["flags"]:
            continue
        for rng in n["slots"]:
            if rng.startswith("["):
                continue
            lo, _, hi = rng.partition("-")
            if int(lo) <= slot <= int(hi or lo):
                return n["port"]
    return None


_cluster = None


def cluster_env():
    """the harness's Redis Cluster: its url and ports. The first call in a process goes through the harness's
    cluster-start, which reuses a live cluster and starts one otherwise (an env that names a cluster does not say it
    still runs)."""
    global _cluster
    if _cluster is None:
        require_env("SK_SERVICES_DIR", "SK_SERVICES_SH")
        subprocess.run(["bash", os.environ["SK_SERVICES_SH"], "cluster-start", os.environ["SK_SERVICES_DIR"]], check=True,
                       capture_output=True, timeout=120)
        os.environ.update(read_cluster_env(os.environ["SK_SERVICES_DIR"]))
        _cluster = os.environ["SK_REDIS_CLUSTER_URL"], [int(p) for p in os.environ["SK_REDIS_CLUSTER_PORTS"].split()]
    return _cluster


# SK_E2E_REDIS=cluster (tests/tests.cmake's *_cluster runs): every seckilld a test starts uses the harness's Redis
# Cluster instead of the single redis-server, and redis_cli follows its redirections
CLUSTER = os.environ.get("SK_E2E_REDIS") == "cluster"
if CLUSTER:
    os.environ["SECKILLD_REDIS"] = cluster_env()[0]


def redis_cli(*args):
    if CLUSTER:
        cmd = ["redis-cli", "-c", "-p", str(cluster_env()[1][0])]
    else:
        require_env("SK_REDIS_PORT")
        cmd = ["redis-cli", "-p", os.environ["SK_REDIS_PORT"]]
    return subprocess.run(cmd + ["--raw"] + [str(a) for a in args],
                          check=True, capture_output=True, text=True, timeout=10).stdout.strip()


def _slot_tool(command, *args):
    """tests/tools/slot.c: the project's own slot code (bindings/redis/slot.c), one answer per argument"""
    return subprocess.run([os.path.join(BUILD, "sk_slot"), command] + [str(a) for a in args], check=True, capture_output=True,
                          text=True, timeout=10).stdout.split()


def slot_token(tag):
    """redis.slot_token(tag) (bindings/redis/slot.c): the first base-36 string, shortest first, in tag's slot"""
    return _slot_tool("token", tag)[0]


def token_of_slot(slot):
    """a slot token of `slot`: a short string whose own slot is it"""
    return _slot_tool("token-of-slot", slot)[0]


def order_id(item, unique):
    """a new order id as the server makes it (common.order_id): the item's slot token, a dot, a unique part"""
    return slot_token(item) + "." + unique


def order_key(oid):
    """common.keys.order: the key of an order, from its id alone"""
    m = re.match(r"^([0-9a-z]+)\.", oid)
    return "seckill:{%s}:order:%s" % (m.group(1), oid) if m else "seckill:order:" + oid


def mysql_query(sql):
    """rows as lists of strings (tab-separated batch output)"""
    require_env("SK_MYSQL_PORT")
    out = subprocess.run(["mariadb", "-h127.0.0.1", "-P" + os.environ["SK_MYSQL_PORT"], "-useckill", "-pseckill",
                          "seckill", "-N", "-B", "-e", sql], check=True, capture_output=True, text=True, timeout=30).stdout
    return [line.split("\t") for line in out.splitlines()]


def sale_scripts():
    """a copy of the shipped scripts (a tree: sale/, books/, redis/) plus the test-only fault-injection routes"""
    d = tempfile.mkdtemp(prefix="sk-sale-")
    shutil.copytree(os.path.join(ROOT, "scripts"), d, dirs_exist_ok=True)
    shutil.copy(os.path.join(SCRIPTS, "sale_hooks", "test_hooks.lua"), d)
    with open(os.path.join(d, "app.lua"), "a") as f:
        f.write('\nrequire "test_hooks"\n')
    return d


def persisted(order_ids):
    """order_id -> count of rows in MySQL's orders table"""
    ids = list(order_ids)
    out = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        rows = mysql_query("SELECT order_id, COUNT(*) FROM orders WHERE order_id IN (%s) GROUP BY order_id"
                           % ",".join("'%s'" % x for x in chunk))
        out.update({r[0]: int(r[1]) for r in rows})
    return out


def wait_persisted(order_ids, timeout=30):
    """waits until every order is in MySQL, asserts none is there twice; returns how long it took"""
    ids = set(order_ids)
    t0 = time.monotonic()
    wait_until(lambda: set(persisted(ids)) >= ids, timeout, interval=0.2, what="%d orders in MySQL" % len(ids))
    assert all(c == 1 for c in persisted(ids).values()), "an order persisted twice"
    return time.monotonic() - t0


# A wait's timeout only catches a hang: the condition is polled until it holds, so a generous bound costs nothing
# when things work. In CI the suite shares two cores with the ASan run and the outage scenarios, where a step that
# takes 0.1 s alone can take seconds; no wait gives up sooner than this.
WAIT_FLOOR_S = 60


def wait_until(predicate, timeout, interval=0.1, what="condition"):
    """polls predicate until it returns a true value (returned) or max(timeout, WAIT_FLOOR_S) passes (AssertionError)"""
    timeout = max(timeout, WAIT_FLOOR_S)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def sanitized():
    """True when the build under test is the ASan one (SK_SANITIZE in its CMakeCache.txt)"""
    try:
        with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
            return re.search(r"^SK_SANITIZE:BOOL=(ON|1|TRUE)$", f.read(), re.M) is not None
    except OSError:
        return False


def normal_only(why):
    """A case that runs on the normal build only (tests/run.sh runs every test on both): for what repeats no C path
    under ASan that another test does not run there. `why` says what it checks and where its C paths are covered."""
    def wrap(fn):
        def run():
            if sanitized():
                print("     skipped on the ASan build: %s" % why, flush=True)
                return
            return fn()
        run.__name__ = fn.__name__
        run.__doc__ = fn.__doc__
        return run
    return wrap


def main(namespace):
    """Runs every test_* function of the calling module in order; prints one line each and a closing summary."""
    only = sys.argv[1:]
    tests = [(n, f) for n, f in namespace.items() if n.startswith("test_") and callable(f) and (not only or n in only)]
    passed = failed = 0
    for name, fn in tests:
        t0 = time.time()
        try:
            fn()
            passed += 1
            print("ok   %-50s %6.2fs" % (name, time.time() - t0), flush=True)
        except Exception:
            failed += 1
            print("FAIL %-50s %6.2fs\n%s" % (name, time.time() - t0, traceback.format_exc()), flush=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not tests else 0)


def conf_plus(base, extra, prefix="seckilld-"):
    """a copy of the config file `base` with extra top-level Lua fields (a string such as 'limits = {...},') before its
    closing brace; returns the new file's path (unlink it when done)"""
    with open(base) as f:
        text = f.read()
    at = text.rstrip().rfind("}")
    f = tempfile.NamedTemporaryFile("w", prefix=prefix, suffix=".conf", delete=False)
    f.write(text[:at] + "    " + extra + "\n}\n")
    f.close()
    return f.name


def conf_with(section, **values):
    """a copy of conf/seckilld.conf with keys of one of its sections (http, redis, mysql...) replaced or added;
    returns the new file's path (unlink it when done)"""
    with open(os.path.join(ROOT, "conf", "seckilld.conf")) as f:
        text = f.read()
    block = re.search(r"\n    %s = \{\n(.*?)\n    \}," % re.escape(section), text, re.S)
    assert block, "conf/seckilld.conf has no %s section" % section
    body = block.group(1)
    for k, v in values.items():
        line = "        %s = %s," % (k, v)
        body, n = re.subn(r"        %s = [^\n]*," % re.escape(k), line.replace("\\", "\\\\"), body)
        if n == 0:
            body += "\n" + line
    text = text[:block.start(1)] + body + text[block.end(1):]
    f = tempfile.NamedTemporaryFile("w", prefix="seckilld-", suffix=".conf", delete=False)
    f.write(text)
    f.close()
    return f.name
