"""Redis Cluster (issue 13, first step): the redis module against a real 3-master cluster started by
tests/harness/services.sh cluster-start: routing by slot over every master, EVALSHA and pipelines in one slot,
optimistic transactions, CROSSSLOT refused from Lua, a slot migrated under load (ASK, then MOVED) with exact counts,
a master killed and restarted, and (on a cluster of its own with a replica per master) a master killed under load and
its replica promoted."""
import json
import os
import subprocess
import threading
import time
import uuid

import lib

CLEAN_ERRORS = {"redis unavailable", "connection closed", "connection failed", "timeout", "connect timeout",
                "pool timeout", "pool busy", "too many redirections"}


URL, PORTS = lib.cluster_env()


cli = lib.cluster_cli


def node_of_slot(slot):
    """the port of the master serving slot (asked of the cluster itself)"""
    port = lib.slot_owner(PORTS[0], slot)
    assert port is not None, "no master serves slot %d" % slot
    return port


def key_on(port, prefix):
    """a fresh key whose slot that master serves"""
    for i in range(10000):
        k = "%s:%s:%d" % (prefix, uuid.uuid4().hex[:6], i)
        if node_of_slot(int(cli(PORTS[0], "CLUSTER", "KEYSLOT", k))) == port:
            return k
    raise AssertionError("no key found for %d" % port)


def server(**kw):
    return lib.Server("cluster", workers=2, env={"SECKILLD_REDIS": URL}, **kw)


def test_keyslot_of_documented_keys_matches_the_cluster():
    # the same values tests/unit/bindings/redis/slot.c checks in C
    want = {"foo": 12182, "bar": 5061, "hello": 866, "123456789": 0x31C3 & 16383,
            "{user1000}.following": 3443, "{user1000}.followers": 3443}
    for k, slot in want.items():
        assert int(cli(PORTS[0], "CLUSTER", "KEYSLOT", k)) == slot, k


def test_keys_spread_over_every_master():
    prefix = "t35:spread:" + uuid.uuid4().hex[:6]
    with server() as s:
        status, b = s.json("GET", "/spread/%s/300" % prefix)
        assert status == 200 and b == {"n": 300, "bad": 0}, (status, b)
        for p in PORTS:
            n = int(cli(p, "EVAL", "return #redis.call('KEYS', ARGV[1])", 0, prefix + ":*"))
            assert 50 < n < 200, (p, n)
        assert s.metric("seckilld_redis_cluster_redirections_total") == 0, "the map was right from the start"
        # /healthz: every master reachable (each thread checks every HEALTH_MS)
        lib.wait_until(lambda: s.json("GET", "/healthz")[1]["redis"] == "up", 5, what="health up")


def test_evalsha_and_pipeline_in_one_slot():
    tag = uuid.uuid4().hex[:8]
    with server() as s:
        # two workers, three nodes: every (worker, node) pair learns the script through NOSCRIPT -> EVAL
        for i in range(1, 7):
            status, b = s.json("GET", "/eval/%s/2" % tag)
            assert status == 200 and b == {"value": 2 * i}, (status, b)
        status, b = s.json("GET", "/pipeline/" + tag)
        assert status == 200 and b == {"n": 5, "values": [0, 1, 42, "42", "PONG"]}, (status, b)


def test_cross_slot_calls_raise_and_send_nothing():
    with server() as s:
        status, b = s.json("GET", "/cross")
        assert status == 200, (status, b)
        for name in ("call", "pipeline", "evalsha", "optimistic", "queue"):
            assert "CROSSSLOT: keys of this call are in different slots" in b[name], (name, b[name])
        assert b["same_slot"] == "ok", b
        assert s.metric("seckilld_redis_commands_total") > 0


def test_masters_and_call_at_reach_each_master():
    with server() as s:
        status, b = s.json("GET", "/masters")
        assert status == 200, (status, b)
        ms = b["masters"]
        assert sorted(m["port"] for m in ms) == sorted(PORTS), ms
        for m in ms:
            # the token stands for its master: its slot is served there, INFO and ROLE went there
            slot = int(cli(PORTS[0], "CLUSTER", "KEYSLOT", "{%s}" % m["token"]))
            assert node_of_slot(slot) == m["port"] and m["role"] == "master" and m["same"], m
            assert cli(m["port"], "INFO", "server").count("run_id:" + m["run_id"]) == 1, m
        foo = node_of_slot(12182)
        assert next(m for m in ms if m["token"] == b["of_foo"])["port"] == foo, b
        assert "CROSSSLOT" in b["cross"], b


def test_optimistic_incr_is_exact_under_concurrency():
    k = "t35:tx:" + uuid.uuid4().hex[:8]
    with server() as s:
        # every transaction must get through: the binding's most tries (1000), not the config's 16. Each worker's gate
        # lets one of its transactions at a time at the key, so a worker's transaction races the other worker's
        # backlog, and on a loaded machine (one worker slower than the other) lost 16 races in a row: a clean
        # "conflict" 503 (nothing written), which this case is not about (1 run in 6 at a load average of 8)
        res = lib.run_concurrently(s.port, [("POST", "/tx/%s?tries=1000" % k, None, None)] * 400, concurrency=16)
        ok = sum(1 for r in res if r[0] == 200)
        assert ok == 400, [r for r in res if r[0] != 200][:5]
        assert int(cli(node_of_slot(int(cli(PORTS[0], "CLUSTER", "KEYSLOT", k))), "GET", k)) == 400


HANG_S = 120  # only to catch a hang: a step that needs this long has failed
CALL_BOUND_S = 10


def hammer_in_background(port, path, stop, connections=8):
    """clients POST path until stop is set: (thread, answers), answers a list the load appends (status, body) to"""
    out = []
    t = threading.Thread(target=lambda: lib.hammer(port, lambda n: ("POST", path, None, None), connections, 600,
                                                   pace=lambda st: None if stop.is_set() else 0, out=out))
    t.start()
    return t, out


def served(answers, since=0):
    """how many of answers[since:] are 200"""
    return sum(1 for a in answers[since:] if a[0] == 200)


def test_slot_migrated_during_load_counts_stay_exact():
    """the manual resharding of one slot (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE) while clients INCR a key of it,
    plainly and under WATCH: ASK during the migration, MOVED after it, and every 200 counted exactly once"""
    # a slot that holds no other key: the cluster is shared by every case (and by the sale's cluster runs), whose keys
    # would otherwise be migrated too, and the check that only ours move would fail on a chance collision
    for _ in range(100):
        tag = uuid.uuid4().hex[:8]
        plain, txk = "{%s}plain" % tag, "{%s}tx" % tag
        slot = int(cli(PORTS[0], "CLUSTER", "KEYSLOT", plain))
        src = node_of_slot(slot)
        if cli(src, "CLUSTER", "COUNTKEYSINSLOT", slot) == "0":
            break
    dst = next(p for p in PORTS if p != src)
    src_id, dst_id = cli(src, "CLUSTER", "MYID"), cli(dst, "CLUSTER", "MYID")
    with server() as s:
        s.allowed_errors = ()
        stop = threading.Event()
        t1, r1 = hammer_in_background(s.port, "/incr/" + plain, stop)
        t2, r2 = hammer_in_background(s.port, "/tx/" + txk, stop)

        def more_served(n, what):
            """waits until both loads got n more 200s from here on"""
            at = len(r1), len(r2)
            lib.wait_until(lambda: served(r1, at[0]) >= n and served(r2, at[1]) >= n, HANG_S, interval=0.02,
                           what="%d more calls of each kind served %s" % (n, what))

        def redirections(kind):
            return s.metric('seckilld_redis_cluster_redirections_total{kind="%s"}' % kind)
        try:
            more_served(60, "before the migration")
            cli(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
            cli(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
            more_served(20, "while the slot is migrating, its keys still on the source")
            keys = cli(src, "CLUSTER", "GETKEYSINSLOT", slot, 100).split()
            assert set(keys) <= {plain, txk} and keys, keys
            cli(src, "MIGRATE", "127.0.0.1", dst, "", 0, 5000, "KEYS", *keys)
            # the keys are on dst, the slot still src's: ASK
            lib.wait_until(lambda: redirections("ask") > 0, HANG_S, interval=0.02, what="an ASK redirection")
            for p in (dst, src) + tuple(p for p in PORTS if p not in (src, dst)):
                cli(p, "CLUSTER", "SETSLOT", slot, "NODE", dst_id)
            # the slot is dst's: MOVED, the map refreshed, and calls served there
            lib.wait_until(lambda: redirections("moved") > 0, HANG_S, interval=0.02, what="a MOVED redirection")
            more_served(20, "after the migration")
        finally:
            stop.set()
            t1.join()
            t2.join()
        assert node_of_slot(slot) == dst
        for name, res, k in (("plain", r1, plain), ("tx", r2, txk)):
            ok = sum(1 for r in res if r[0] == 200)
            # "conflict": a transaction that lost 16 races to the other worker (as on a single Redis): nothing written
            failed = [r for r in res if r[0] != 200 and b'"conflict"' not in r[1]]
            assert ok > 50, (name, ok)
            assert int(cli(dst, "GET", k)) == ok, (name, cli(dst, "GET", k), ok)
            # only the short ASK window may fail, and then with a clean error
            assert len(failed) <= max(5, ok // 10), (name, len(failed), failed[:5])
            for st, body, *_ in failed:
                assert st == 503 and any(e in body.decode() for e in CLEAN_ERRORS), (st, body)
        m = s.metrics()
        assert m['seckilld_redis_cluster_redirections_total{kind="moved"}'] > 0, m
        assert m['seckilld_redis_cluster_redirections_total{kind="ask"}'] > 0, m
        assert m['seckilld_redis_cluster_refreshes_total{result="ok"}'] > 0, m


def test_killed_master_fails_cleanly_and_recovers_when_restarted():
    victim = PORTS[2]
    n = PORTS.index(victim) + 1
    k, other = key_on(victim, "t35:kill"), key_on(PORTS[0], "t35:alive")
    sh, d = os.environ["SK_SERVICES_SH"], os.environ["SK_SERVICES_DIR"]
    with server() as s:
        s.allowed_errors = ()
        assert s.request("POST", "/incr/" + k)[0] == 200
        subprocess.run(["bash", sh, "cluster-node-stop", d, str(n)], check=True, capture_output=True, timeout=60)
        try:
            t0 = time.monotonic()
            status, b = s.json("POST", "/incr/" + k, timeout=HANG_S)
            took = time.monotonic() - t0
            assert status == 503 and b["error"] in CLEAN_ERRORS, (status, b)
            # a call to a dead master ends within the configured bounds (connect_timeout_ms and command_timeout_ms,
            # 1 s each): ten times that only catches one that hangs
            assert took < CALL_BOUND_S, "a call to a dead master took %.1fs" % took
            print("     a call to the dead master failed cleanly after %.2fs" % took)
            assert s.json("POST", "/incr/" + other)[0] == 200, "the other masters serve on"
            lib.wait_until(lambda: s.json("GET", "/healthz")[1]["redis"] != "up", 5, what="health says redis down")
        finally:
            subprocess.run(["bash", sh, "cluster-node-start", d, str(n)], check=True, capture_output=True, timeout=60)
        lib.wait_until(lambda: s.json("POST", "/incr/" + k)[0] == 200, 15, what="calls on the restarted master")
        lib.wait_until(lambda: s.json("GET", "/healthz")[1]["redis"] == "up", 10, what="health up again")
        # the restarted master came back empty (no persistence): the count restarted, the calls work. Each worker
        # reconnects its own pool to the node on its own backoff (bindings/redis/pool.c), and the health flag is the
        # last thread's check (cluster.c on_health_timer): a call on the worker that has not reconnected yet fails at
        # once, so wait for the transaction itself
        lib.wait_until(lambda: s.json("POST", "/tx/" + k)[0] == 200, 15, what="a transaction on the restarted master")


def test_killed_master_under_load_fails_over_to_its_replica():
    """a cluster with a replica per master (its own services dir): SIGKILL a master while clients INCR a key of it;
    its replica is promoted, the map refresh follows it, calls resume within seconds with only clean 503s between;
    the old master, restarted, rejoins as the new master's replica"""
    with lib.ReplicatedCluster("ha") as cluster:
        ports = cluster.ports

        def nodes():
            return lib.cluster_nodes(ports[0])

        k = "t35:ha:" + uuid.uuid4().hex[:8]
        slot = int(cli(ports[0], "CLUSTER", "KEYSLOT", k))
        owner = lib.slot_owner(ports[0], slot)
        victim = next(n for n in nodes() if n["port"] == owner)
        # the replicas' roles reach ports[0]'s view by gossip, which may lag the cluster's creation by a moment
        replica = lib.wait_until(lambda: next((n for n in nodes() if n["master"] == victim["id"]), None), 10,
                                 what="the victim's replica in CLUSTER NODES")
        # the replica's link up before the load: a replica still in its first full sync (a fresh cluster on a loaded
        # machine) loses the whole run with its master, which says nothing about the binding
        lib.wait_until(lambda: "master_link_status:up" in cli(replica["port"], "INFO", "replication"), 30,
                       what="the victim's replica in sync")
        with lib.Server("cluster", workers=2, env={"SECKILLD_REDIS": cluster.url}) as s:
            s.allowed_errors = ()
            stop = threading.Event()
            t, res = hammer_in_background(s.port, "/incr/" + k, stop)
            try:
                lib.wait_until(lambda: served(res) >= 250, HANG_S, interval=0.02, what="250 calls served")
                n = ports.index(victim["port"]) + 1
                cluster.node_stop(n)  # SIGKILL, returns once the process is gone
                killed_at = time.monotonic()
                lib.wait_until(lambda: lib.slot_owner(replica["port"], slot) == replica["port"], 15,
                               what="the replica promoted")
                promoted_after = time.monotonic() - killed_at
                # calls resume on the new master (every 200 from here on is its own: the old one is dead)
                at = len(res)
                lib.wait_until(lambda: served(res, at) >= 50, HANG_S, interval=0.02,
                               what="50 calls served after the promotion")
            finally:
                stop.set()
                t.join()
            ok = [int(json.loads(b)["value"]) for st, b, *_ in res if st == 200]
            failed = [x for x in res if x[0] != 200]
            for st, body, *_ in failed:
                assert st == 503 and any(e in body.decode() for e in CLEAN_ERRORS), (st, body)
            final = int(cli(replica["port"], "GET", k))
            # after the promotion the calls go to the new master: the last values returned are its own
            assert final == max(ok[-20:]), (final, ok[-20:])
            # what the old master acknowledged and had not replicated yet is lost (asynchronous replication; the
            # books' rebuild covers it for the sale): how much depends on the replica's lag, so on the machine's load
            # (CI beside a parallel build once saw 621 of 743), and is printed, not bounded; never more counted than
            # sent (8 connections: calls executed whose answer was lost with the old master)
            assert final <= len(ok) + 8, (final, len(ok))
            assert len(ok) > 200, len(ok)
            print("promoted after %.1f s; %d ok, %d clean 503s, %d acknowledged writes lost" % (
                promoted_after, len(ok), len(failed), max(0, len(ok) - final)))
            assert s.json("POST", "/incr/" + k)[1]["value"] == final + 1
        cluster.node_start(n)
        lib.wait_until(lambda: "role:slave" in cli(victim["port"], "INFO", "replication").replace("\r", ""), 20,
                       what="the old master rejoined as a replica")


lib.main(globals())
