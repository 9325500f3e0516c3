"""MySQL binding (issue 4): types, safe placeholders, errors, transactions, pooling under load, timeouts,
MariaDB killed mid-load and down at start-up. Runs against the harness's mariadbd (scripts: scripts/mysql)."""
import os
import signal
import subprocess
import tempfile
import threading
import time

import lib

ROOT = lib.ROOT


def conf_with(**mysql):
    """a config file: the defaults plus the given mysql.* settings (the schema path stays the repo's)"""
    items = "".join("%s = %s, " % (k, v) for k, v in mysql.items())
    f = tempfile.NamedTemporaryFile("w", prefix="seckilld-mysql-", suffix=".conf", delete=False)
    f.write('return { mysql = { %s schema = %r } }\n' % (items, os.path.join(ROOT, "conf", "schema.sql")))
    f.close()
    return f.name


def server_links(pid):
    """the client ports of pid's established TCP connections to the harness's mariadbd, from /proc"""
    mysql_port = int(os.environ["SK_MYSQL_PORT"])
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
                if inode in inodes and state == "01" and int(remote.rsplit(":", 1)[1], 16) == mysql_port:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def processlist_count(ports):
    """how many of those links MariaDB itself lists as sessions"""
    if not ports:
        return 0
    hosts = ",".join("'127.0.0.1:%d'" % p for p in ports)
    return int(sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE HOST IN (%s)" % hosts)[0][0])


def sql(statement):
    """rows as lists of strings, through the mariadb client with a utf8mb4 connection (lib.mysql_query's default
    character set cannot carry 4-byte UTF-8)"""
    lib.require_env("SK_MYSQL_PORT")
    out = subprocess.run(["mariadb", "--default-character-set=utf8mb4", "-h127.0.0.1", "-P" + os.environ["SK_MYSQL_PORT"],
                          "-useckill", "-pseckill", "seckill", "-N", "-B", "-e", statement],
                         check=True, capture_output=True, text=True, timeout=30).stdout
    return [line.split("\t") for line in out.splitlines()]


HANG_S = 120  # only to catch a hang: a step that needs this long has failed


def session_ids(pid):
    """MariaDB's ids of the sessions of pid's links"""
    ports = server_links(pid)
    if not ports:
        return []
    hosts = ",".join("'127.0.0.1:%d'" % p for p in ports)
    return [r[0] for r in sql("SELECT ID FROM information_schema.PROCESSLIST WHERE HOST IN (%s)" % hosts)]


def kill_sessions(ids):
    """ends sessions left running on the server after their client went (a SLEEP runs on when its link closes)"""
    for i in ids:
        subprocess.run(["mariadb", "-h127.0.0.1", "-P" + os.environ["SK_MYSQL_PORT"], "-useckill", "-pseckill",
                        "-e", "KILL %s" % i], capture_output=True, timeout=30)  # gone already: an error, ignored


def setup(s):
    status, body = s.json("POST", "/setup")
    assert status == 200, body


def test_type_mapping():
    with lib.Server("mysql") as s:
        setup(s)
        status, b = s.json("POST", "/types")
        assert status == 200, b
        assert b["affected_rows"] == 1, b
        assert (b["i"], b["i_type"]) == (-2147483648, "integer"), b
        assert b["b_type"] == "integer" and b["b_exact"] is True, b  # 2^53+1 survives: a Lua integer, not a float
        assert (b["u"], b["u_type"]) == ("18446744073709551615", "string"), b  # beyond int64: exact text
        assert (b["d"], b["d_type"]) == ("12345.67", "string"), b  # DECIMAL stays exact text
        assert (b["f"], b["f_type"]) == (1.5, "float"), b
        assert b["t"] == 1, b  # true went in as TRUE
        assert b["v"] == "héllo ✓ 😀", b  # utf8mb4
        assert (b["dt"], b["dt_type"]) == ("2024-02-29 12:34:56.789", "string"), b
        assert b["n_is_null"] is True and b["n"] is None, b  # mysql.null is json.null
        assert (b["bl_hex"], b["bl_len"]) == ("006100ff00", 5), b  # BLOB with NUL and non-UTF-8 bytes
        row = sql("SELECT i, b, d, v, dt, n IS NULL, HEX(bl) FROM t_types WHERE id = 1")[0]
        assert row == ["-2147483648", "9007199254740993", "12345.67", "héllo ✓ 😀", "2024-02-29 12:34:56.789", "1",
                       "006100FF00"], row
        status, b = s.json("POST", "/binary")
        assert b == {"same": True, "len": 517, "v_null": True}, b


def test_injection_is_stored_literally():
    nasty = ["' OR 1=1 --", "'; DROP TABLE t_kv; --", "\\' OR '1'='1", "back\\slash\\", 'dq " and \' sq',
             "nul\u0000byte", "ünïcødé ✓ 😀", "%_ like wildcards", "?", "\\0\\n\\Z"]
    with lib.Server("mysql") as s:
        setup(s)
        for i, v in enumerate(nasty):
            status, b = s.json("POST", "/roundtrip", {"key": "k%d" % i, "s": v})
            assert status == 200, (v, b)
            assert b["matches"] == 1 and b["same_v"] and b["same_b"], (v, b)
            assert b["v_hex"] == v.encode().hex(), (v, b)
            assert b["total"] == i + 1, (v, b)  # nothing dropped, nothing extra
            assert b["rows_with_key_s"] == 0, (v, b)  # the injection matched no key
        stored = sql("SELECT HEX(v) FROM t_kv ORDER BY k")
        assert [bytes.fromhex(r[0]).decode() for r in stored] == nasty, stored


def test_duplicate_key_and_placeholders():
    with lib.Server("mysql") as s:
        setup(s)
        status, b = s.json("POST", "/dup")
        assert b.get("res") is None and b["errno"] == 1062 and b["sqlstate"] == "23000", b
        assert "Duplicate entry" in b["err"], b
        assert sql("SELECT v FROM t_kv WHERE k = 'dup'") == [["first"]]
        status, b = s.json("GET", "/misuse")
        assert "2 placeholder(s) but 1 value(s)" in b["count"], b
        assert "cannot send a table" in b["table"], b
        status, b = s.json("GET", "/quoted")
        assert b == {"q": "?", "d": "?", "v": 7}, b  # '?' in quotes and comments is not a placeholder


def test_transactions_commit_and_roll_back():
    with lib.Server("mysql") as s:
        setup(s)
        status, b = s.json("POST", "/tx/commit")
        assert b["ok"] is True and b["err"] == 2 and b["errno"] == 2 and b["rows_after"] == 2, b
        status, b = s.json("POST", "/tx/error")
        assert b.get("ok") is None and "boom" in b["err"] and b["rows_after"] == 0, b
        status, b = s.json("POST", "/tx/nilerr")
        assert b.get("ok") is None and b["err"] == "changed my mind" and b["rows_after"] == 0, b
        status, b = s.json("POST", "/tx/dup")
        assert b.get("ok") is None and b["err"] == 1062 and b["rows_after"] == 0, b
        status, b = s.json("POST", "/tx/selfcommit")
        assert b["ok"] is True and b["err"] == "done" and b["rows_after"] == 2, b
        rows = sql("SELECT k FROM t_kv ORDER BY k")
        assert rows == [["commit-1"], ["commit-2"], ["selfcommit-1"], ["selfcommit-2"]], rows


def test_300_coroutines_x10_on_pool_of_4_no_leak():
    # (wait_timeout_ms long: how long 300 coroutines queue for 4 links depends on the machine's speed; a "pool wait
    # timeout" here would be a hang)
    conf = conf_with(wait_timeout_ms=60000)
    with lib.Server("mysql", workers=1, conf=conf) as s:
        setup(s)
        before = server_links(s.proc.pid)
        for round_ in range(2):
            t0 = time.time()
            results = lib.run_concurrently(s.port, [("GET", "/q/%d?n=10" % i, None, None) for i in range(300)], 300)
            took = time.time() - t0
            bad = [r for r in results if r[0] != 200 or b'"good":10' not in r[1]]
            assert not bad, "%d bad answers, e.g. %r" % (len(bad), bad[:3])
            links = server_links(s.proc.pid)
            print("    round %d: 3000 queries in %.2fs, %d links, %d in PROCESSLIST" %
                  (round_, took, len(links), processlist_count(links)))
            assert len(links) <= 4, links
            assert processlist_count(links) == len(links), links
        assert len(before) <= 4 and len(server_links(s.proc.pid)) <= 4
        assert s.metric('seckilld_mysql_queries_total{result="ok"}') >= 6000
        assert s.metric("seckilld_mysql_pool_waits_total") > 0
    os.unlink(conf)


def test_pool_hands_out_clean_sessions():
    # a pool of one link: every statement below runs on the same session, one lease after another
    with lib.Server("mysql", conf=conf_with(pool_size=1)) as s:
        setup(s)
        for path in ("/dirty", "/dirty-autocommit"):
            status, b = s.json("POST", path)
            assert status == 200, b
            status, b = s.json("GET", "/state")
            assert b == {"ac": 1, "tx": 0}, (path, b)  # no open transaction, autocommit restored
        # a procedure that opens a transaction and returns two results: drained, then rolled back on release
        status, b = s.json("POST", "/call")
        assert b == {"one": 1}, b
        status, b = s.json("GET", "/state")
        assert b == {"ac": 1, "tx": 0}, b
        assert sql("SELECT COUNT(*) FROM t_kv WHERE k = 'proc'") == [["0"]]


def test_query_timeout_fails_cleanly_and_link_is_not_reused():
    conf = conf_with(pool_size=1, query_timeout_ms=500)
    ids = []
    with lib.Server("mysql", conf=conf) as s:
        ids[:] = session_ids(s.proc.pid)  # the links opened at start: the SLEEP below runs on one of them
        # a statement of 30 s against a timeout of 500 ms: failed at the timeout, never before it, and long before
        # the statement would have ended
        status, b = s.json("GET", "/sleep?s=30", timeout=HANG_S)
        assert b.get("res") is None and b["err"] == "timeout" and b.get("errno") is None, b
        assert 450 <= b["took_ms"] < 30000, b
        assert b["after"] == "after" and b["ac"] == 1, b  # a fresh link answered, not the one mid-SLEEP
        assert s.metric('seckilld_mysql_queries_total{result="timeout"}') == 1
        links = server_links(s.proc.pid)
        assert len(links) == 1, links
    kill_sessions(ids)  # the SLEEP runs on on the server after its link was closed
    os.unlink(conf)


def test_mariadb_killed_mid_load_then_recovers():
    with lib.Server("mysql", workers=2) as s:
        setup(s)
        out = []
        stop = threading.Event()
        load = threading.Thread(target=lambda: lib.hammer(
            s.port, lambda n: ("GET", "/q/%d?n=3" % (n % 1000), None, None), 20, 600,
            pace=lambda st: None if stop.is_set() else 0, out=out))
        load.start()

        def since(at, status):
            return sum(1 for r in out[at:] if r[0] == status)
        try:
            lib.wait_until(lambda: since(0, 200) >= 100, HANG_S, interval=0.02, what="100 answers")
            lib.services("mysql-stop")  # SIGKILL, returns once the process is gone
            at = len(out)
            lib.wait_until(lambda: since(at, 503) >= 20, HANG_S, interval=0.02, what="20 failures while it is down")
            lib.services("mysql-start")  # returns once it answers
            at = len(out)
            lib.wait_until(lambda: since(at, 200) >= 100, HANG_S, interval=0.02, what="100 answers after the restart")
        finally:
            stop.set()
            load.join()
        ok, failed, other = [], [], []
        for r in out:
            (ok if r[0] == 200 and b'"good":3' in r[1] else
             failed if r[0] == 503 and b'"ok":false' in r[1] else other).append(r)
        print("    %d ok, %d clean errors, %d other; errors e.g. %r" % (len(ok), len(failed), len(other),
                                                                       failed[0][1][:120] if failed else None))
        assert not other, "unexpected answers: %r" % other[:5]
        assert ok and failed, (len(ok), len(failed))
        lib.wait_until(lambda: s.request("GET", "/q/1?n=3")[0] == 200, 10, what="queries to succeed again")
        lib.wait_until(lambda: s.request("GET", "/healthz")[0] == 200, 10, what="healthz to say mysql up")
        assert s.metric("seckilld_mysql_connection_errors_total") >= 1
    # the kill may have torn the tables' last writes: later tests call /setup again


def test_mariadb_down_at_start_up():
    lib.services("mysql-stop")
    try:
        s = lib.Server("mysql", wait_healthy=False)
        s.allowed_errors = []
        with s:
            status, body = s.json("GET", "/healthz")
            assert status == 503 and body["mysql"] == "down", (status, body)
            assert s.json("GET", "/ping") == (200, {"ok": True})
            t0 = time.monotonic()
            status, body = s.json("GET", "/q/1?n=1", timeout=HANG_S)
            took = time.monotonic() - t0
            assert status == 503 and body["err"].startswith("mysql unavailable"), body
            # answered at once: it never queued for a link (nor waited wait_timeout_ms for one)...
            assert s.metric("seckilld_mysql_pool_waits_total") == 0
            assert s.metric('seckilld_mysql_queries_total{result="unavailable"}') == 1
            # ... and within the configured bounds (connect_timeout_ms 2 s): ten times that only catches a hang
            assert took < 20, "failing took %.2fs" % took
            lib.services("mysql-start")
            lib.wait_until(lambda: s.request("GET", "/healthz")[0] == 200, 10, what="healthz to say mysql up")
            lib.wait_until(lambda: s.request("GET", "/q/1?n=1")[0] == 200, 10, what="queries to succeed")
            assert "cannot apply the schema now" in s.log(), s.log()[-2000:]
            with open(os.path.join(lib.ROOT, "conf", "schema.sql")) as f:  # every statement ends a line with ';'
                n = sum(1 for l in f if l.rstrip().endswith(";") and not l.lstrip().startswith("--"))
            lib.wait_until(lambda: "applied (%d statements)" % n in s.log(), 5, what="the schema thread to apply it")
    finally:
        lib.services("mysql-start")


def test_sigterm_past_the_drain_timeout_abandons_statements_and_transactions():
    """A drain that times out abandons every coroutine parked on MySQL (core/op.h's cancel): a statement in flight
    (its link is discarded), statements queued for a link (their waits withdrawn), a transaction holding a link
    between statements (given back to be rolled back) and one with a statement in flight (its link discarded).
    Every client gets a definite 503, the process exits 0 with no error in the log (no sanitizer report under
    ASan), and nothing the transactions wrote survives."""
    f = tempfile.NamedTemporaryFile("w", prefix="seckilld-mysql-", suffix=".conf", delete=False)
    # (wait_timeout_ms long and no request deadline: the statements wait for the drain, however long the steps below
    # take)
    f.write('return { http = { shutdown_timeout_ms = 300, deadline_ms = 0 }, mysql = { pool_size = 3, '
            'wait_timeout_ms = 60000, '
            'schema = %r } }\n' % os.path.join(ROOT, "conf", "schema.sql"))
    f.close()
    s = lib.Server("mysql", workers=1, conf=f.name)
    out = {}
    ids = []
    try:
        setup(s)
        # the two transactions and a SLEEP(60) take the three links; two more statements queue. (60 s: each is still
        # running when the drain gives up on it, however slow the machine.)
        reqs = [("POST", "/tx-hold/sleep?s=60", None, None), ("POST", "/tx-hold/query?s=60", None, None),
                ("GET", "/sleep?s=60", None, None)]
        t = threading.Thread(target=lambda: out.update(r=lib.run_concurrently(s.port, reqs, concurrency=3,
                                                                              timeout=HANG_S)))
        t.start()

        def in_place():
            """the transactions' INSERTs are in; one runs SLEEP(60), as does /sleep"""
            ids[:] = session_ids(s.proc.pid)
            if len(ids) < 3:
                return False
            within = "IN (%s)" % ",".join(ids)
            sleeping = sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID %s AND INFO LIKE "
                           "'SELECT SLEEP(%%'" % within)
            inserted = sql("SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_mysql_thread_id %s AND "
                           "trx_rows_modified > 0" % within)
            return sleeping == [["2"]] and inserted == [["2"]]
        lib.wait_until(in_place, HANG_S, interval=0.05, what="two transactions with their INSERT in and two SLEEPs")
        waits = s.metric("seckilld_mysql_pool_waits_total")
        more = [("GET", "/sleep?s=60", None, None)] * 2
        t2 = threading.Thread(target=lambda: out.update(r2=lib.run_concurrently(s.port, more, concurrency=2,
                                                                                timeout=HANG_S)))
        t2.start()
        lib.wait_until(lambda: s.metric("seckilld_mysql_pool_waits_total") >= waits + 2, 5, interval=0.02,
                       what="two more statements queued for a link")
        s.send(signal.SIGTERM)
        code = s.proc.wait(HANG_S)
        t.join()
        t2.join()
        log = s.log()
        assert code == 0, "exit %s:\n%s" % (code, log[-3000:])
        assert "abandoned 5 coroutines" in log, log[-3000:]
        s.assert_no_errors_in_log()
        assert all(st == 503 for st, _, _ in out["r"] + out["r2"]), out
        # the server's sessions of the discarded links run their SLEEP on: ended here, the open transaction's
        # INSERT is rolled back (uncommitted, it is invisible meanwhile)
        kill_sessions(ids)
        assert sql("SELECT COUNT(*) FROM t_kv WHERE k LIKE 'abandoned-%'") == [["0"]]
    finally:
        if s.proc.poll() is None:
            s.proc.kill()
        kill_sessions(ids)
        os.unlink(f.name)


if __name__ == "__main__":
    lib.main(globals())
