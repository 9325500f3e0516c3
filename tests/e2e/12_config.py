"""The strict config check (issue 14, item 5): `seckilld -c FILE -t` on small config files. Every key the server, the
bindings and the shipped scripts read is known with its type and range; an unknown key is an error with a
suggestion; every problem is reported, one per line with its key path, exit 1; a normal start refuses with the same
lines; the default admin token is refused unless the server listens on loopback only."""
import os
import subprocess
import tempfile

import lib

SHIPPED_SCRIPTS = os.path.join(lib.ROOT, "scripts")


def env(**extra):
    """no SECKILLD_* override but the shipped scripts and an admin token (the scripts refuse to load without one; an
    empty override is no override)"""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SECKILLD_")}
    e.update(SECKILLD_SCRIPTS=SHIPPED_SCRIPTS, SECKILLD_ADMIN_TOKEN="test-token")
    e.update(extra)
    return e


def check(text, args=("-t",), **extra_env):
    """runs seckilld -c FILE ARGS on a config holding text; returns (exit code, the problem lines)"""
    with tempfile.NamedTemporaryFile("w", prefix="sk-conf-", suffix=".conf", delete=False) as f:
        f.write(text)
    try:
        r = subprocess.run([lib.BINARY, "-c", f.name] + list(args), cwd=lib.ROOT, capture_output=True, text=True,
                           timeout=30, env=env(**extra_env))
    finally:
        os.unlink(f.name)
    lines = [l[len(f.name) + 2:] if l.startswith(f.name + ": ") else l for l in r.stderr.splitlines()]
    return r.returncode, lines


def refused(text, *expected, **extra_env):
    """asserts -t exits 1 naming every expected line (exactly, after the file name); returns the lines"""
    rc, lines = check(text, **extra_env)
    assert rc == 1, (rc, lines)
    for e in expected:
        assert e in lines, "expected %r in:\n%s" % (e, "\n".join(lines))
    return lines


def accepted(text, **extra_env):
    rc, lines = check(text, **extra_env)
    assert rc == 0, (rc, lines)


def test_shipped_and_test_configs_pass():
    for conf in ("conf/seckilld.conf", "tests/e2e/scripts/sale.conf"):
        r = subprocess.run([lib.BINARY, "-c", conf, "-t"], cwd=lib.ROOT, capture_output=True, text=True, timeout=30,
                           env=env())
        assert r.returncode == 0, (conf, r.stdout, r.stderr)
    r = subprocess.run([lib.BINARY, "-c", "tests/e2e/scripts/kafka/kafka.conf", "-t"], cwd=lib.ROOT, capture_output=True,
                       text=True, timeout=30, env=env(SECKILLD_LISTEN="127.0.0.1:18080",
                                                      SECKILLD_SCRIPTS=os.path.join(lib.SCRIPTS, "kafka")))
    assert r.returncode == 0, (r.stdout, r.stderr)
    # every key of every section at once, at a legal value
    accepted("""return {
        listen = "127.0.0.1:8080", workers = 2, scripts = "scripts", admin_token = "t", strategy = "eval",
        log_level = "debug", token_secret = "0123456789abcdef0123", token_secret_previous = "fedcba9876543210fedc",
        token_secret_previous_until = 1700000000000, custom = { anything = { 1, 2, { x = "y" } } },
        http = { max_body = 1024, request_timeout_ms = 1, shutdown_timeout_ms = 0, deadline_ms = 0, max_inflight = 0,
                 bench_routes = false },
        redis = { url = "redis://127.0.0.1:6379/0", pool_size = 64, lease_size = 8, lease_queue = 0, connect_timeout_ms = 5,
                  command_timeout_ms = 5, lease_wait_ms = 5, tries = 1, backoff_max_ms = 1000, gate_backoff_max_ms = 1,
                  gate_wait_ms = 1, gate_queue = 0 },
        mysql = { url = "mysql://a:b@127.0.0.1:3306/x", pool_size = 1, connect_timeout_ms = 1, query_timeout_ms = 1,
                  wait_timeout_ms = 1, idle_timeout_ms = 1, schema = "conf/schema.sql" },
        kafka = { brokers = "", topic = "t", dead_letter_topic = "t.dlq", group = "g", partitions = 1, mock_brokers = 1,
                  batch_size = 1, max_failures = 1, retry_backoff_ms = 1, retry_backoff_max_ms = 1, shutdown_timeout_ms = 0,
                  flush_timeout_ms = 0, redrive_timeout_ms = 1,
                  producer = { ["message.timeout.ms"] = "5000", ["enable.idempotence"] = true, ["linger.ms"] = 5 },
                  consumer = { ["session.timeout.ms"] = 6000 } },
        shared = { max_entries = 1 },
        sale = { batch_max = 1, queue_wait_ms = 1, order_ttl_s = 1, tombstone_ttl_s = 1, rebuild_grace_ms = 0,
                 sweep_after_ms = 0, barrier_timeout_ms = 1, watch_ms = 1, sweep_ms = 1 },
        idempotency = { ttl_s = 1, lease_ms = 0 },
        limits = { scope = "redis", on_redis_error = "closed", ip = { rate = 0.5, burst = 1 }, user = { rate = 5 },
                   item = { rate = 20000, burst = 20000 }, trusted_proxies = { "127.0.0.1", "::1" } },
        items = { { id = "a", stock = 0, limit_per_user = 1, starts_at = 0, ends_at = 1, require_token = false,
                    token_ttl_ms = 1000, max_rps = 0.5, buckets = 1 }, { item_id = "b", stock = 5 } },
    }""")


def test_unknown_keys_are_errors_with_a_suggestion():
    refused("return { redis = { pool_sze = 4 } }", "redis.pool_sze: unknown key; did you mean pool_size?")
    refused("return { stratgy = 'eval' }", "stratgy: unknown key; did you mean strategy?")
    refused("return { sale = { batchmax = 2 } }", "sale.batchmax: unknown key; did you mean batch_max?")
    refused("return { items = { { id = 'a', stok = 1 } } }", "items[1].stok: unknown key; did you mean stock?")
    refused("return { limits = { ip = { rate = 1, brust = 2 } } }", "limits.ip.brust: unknown key; did you mean burst?")
    refused("return { nothing_like_it = 1 }", "nothing_like_it: unknown key")
    refused("return { redis = { 'redis://x' } }", "redis[1]: unexpected entry: keys must be names (key = value)")
    refused("return { items = { a = { id = 'a', stock = 1 } } }",
            "items.a: unexpected key: a list holds only entries 1, 2, ...")


def test_librdkafka_property_tables_are_free():
    accepted("return { kafka = { producer = { ['any.property.at.all'] = 'x' }, consumer = { ['x.y'] = 1 } } }")
    refused("return { kafka = { producer = { ['a.b'] = {} } } }",
            'kafka.producer["a.b"]: must be a string, a number or a boolean, got table')
    refused("return { kafka = { consumer = 'x' } }", "kafka.consumer: must be a table, got string")


def test_types_are_checked():
    refused("return { redis = { url = 5 } }", "redis.url: must be a string, got an integer")
    refused("return { workers = '2' }", "workers: must be an integer, got string")
    refused("return { redis = { pool_size = 2.5 } }", "redis.pool_size: must be an integer, got 2.5")
    refused("return { limits = { ip = { rate = 'fast' } } }", "limits.ip.rate: must be a number, got string")
    refused("return { http = { bench_routes = 'yes' } }", "http.bench_routes: must be a boolean, got string")
    refused("return { sale = 5 }", "sale: must be a table, got an integer")
    refused("return { items = 'demo' }", "items: must be a list (a table), got string")
    refused("return { items = { { id = 'a', stock = 1, require_token = 'yes' } } }",
            "items[1].require_token: must be a boolean, got string")
    accepted("return { workers = 2.0 }")  # a float without a fraction is an integer, as Lua's math.tointeger says


def test_ranges_are_checked():
    refused("return { redis = { pool_size = 0 } }", "redis.pool_size: must be between 1 and 64, got 0")
    refused("return { mysql = { query_timeout_ms = -1 } }", "mysql.query_timeout_ms: must be between 1 and 86400000, got -1")
    refused("return { http = { max_body = 0 } }", "http.max_body: must be between 1 and 1073741824, got 0")
    refused("return { http = { deadline_ms = -1 } }", "http.deadline_ms: must be between 0 and 86400000, got -1")
    refused("return { workers = 65 }", "workers: must be between 0 and 64, got 65")
    refused("return { kafka = { partitions = 0 } }", "kafka.partitions: must be between 1 and 10000, got 0")
    refused("return { sale = { batch_max = 0 } }", "sale.batch_max: must be between 1 and 100000, got 0")
    refused("return { idempotency = { ttl_s = 0 } }", "idempotency.ttl_s: must be at least 1, got 0")
    refused("return { items = { { id = 'a', stock = -1 } } }", "items[1].stock: must be between 0 and 1000000000, got -1")
    refused("return { limits = { user = { rate = 0 } } }", "limits.user.rate: must be between 1e-09 and 1000000000, got 0")
    refused("return { token_secret = 'short' }", "token_secret: must be 16 to 4096 characters long")
    refused("return { admin_token = '' }", "admin_token: must be 1 to 4096 characters long", SECKILLD_ADMIN_TOKEN="")
    for listen in ("127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1", ":8080", "127.0.0.1:http"):
        refused("return { listen = %r }" % listen,
                'listen: must be HOST:PORT with a port from 1 to 65535, got "%s"' % listen)
    accepted("return { listen = '127.0.0.1:65535' }")
    accepted("return { listen = '127.0.0.1:1' }")


def test_words_are_checked():
    refused("return { strategy = 'wach' }", 'strategy: must be one of "watch", "eval", got "wach"')
    refused("return { log_level = 'verbose' }", 'log_level: must be one of "debug", "info", "warn", "error", got "verbose"')
    refused("return { log_format = 'xml' }", 'log_format: must be one of "text", "json", got "xml"')
    refused("return { access_log = 1 }", "access_log: must be a string or a boolean, got an integer")
    accepted("return { log_format = 'json', access_log = false }")
    refused("return { limits = { scope = 'cluster' } }", 'limits.scope: must be one of "process", "redis", got "cluster"')
    refused("return { limits = { on_redis_error = 'ignore' } }",
            'limits.on_redis_error: must be one of "local", "open", "closed", got "ignore"')


def test_every_problem_is_reported_one_per_line_and_a_start_refuses_with_the_same():
    text = """return {
        redis = { pool_sze = 4, tries = 0 },
        mysql = { pool_size = -2 },
        workers = "four",
        http = { deadline_ms = -1 },
        strategy = "fast",
    }"""
    expected = ["http.deadline_ms: must be between 0 and 86400000, got -1",
                "mysql.pool_size: must be between 1 and 1024, got -2",
                "redis.pool_sze: unknown key; did you mean pool_size?",
                "redis.tries: must be between 1 and 1000, got 0",
                'strategy: must be one of "watch", "eval", got "fast"',
                "workers: must be an integer, got string"]
    rc, lines = check(text)
    assert rc == 1 and lines == expected, (rc, lines)  # one line each, sorted by key path
    # a normal start: the same lines, exit 1, nothing started
    rc, lines = check(text, args=(), SECKILLD_LISTEN="127.0.0.1:%d" % lib.free_port())
    assert rc == 1 and lines == expected, (rc, lines)


def test_environment_overrides_are_checked():
    refused("return {}", "http.deadline_ms: must be between 0 and 86400000, got -5", SECKILLD_DEADLINE_MS="-5")
    refused("return {}", 'strategy: must be one of "watch", "eval", got "nope"', SECKILLD_STRATEGY="nope")
    refused("return {}", "workers: must be between 0 and 64, got 100", SECKILLD_WORKERS="100")


def test_default_admin_token_only_on_loopback():
    no_token = {"SECKILLD_ADMIN_TOKEN": ""}
    msg = ('admin_token: the default token "change-me" is refused unless listen is a loopback address (127.0.0.0/8, '
           '::1, localhost), and listen is "%s"; set admin_token (or SECKILLD_ADMIN_TOKEN)')
    for listen in ("127.0.0.1:8080", "127.9.8.7:8080", "localhost:8080", "::1:8080", "[::1]:8080"):
        accepted("return { admin_token = 'change-me', listen = %r }" % listen, **no_token)
    accepted("return { admin_token = 'change-me' }", **no_token)  # the default listen is 127.0.0.1:8080
    for listen in ("0.0.0.0:8080", "10.0.0.5:8080", ":::8080", "example.com:8080"):
        refused("return { admin_token = 'change-me', listen = %r }" % listen, msg % listen, **no_token)
    accepted("return { admin_token = 'a-real-secret', listen = '0.0.0.0:8080' }", **no_token)
    # the shipped config's token with an override of the address, and the override of the token that fixes it
    r = subprocess.run([lib.BINARY, "-c", "conf/seckilld.conf", "-t"], cwd=lib.ROOT, capture_output=True, text=True,
                       timeout=30, env=env(SECKILLD_LISTEN="0.0.0.0:8080", **no_token))
    assert r.returncode == 1 and (msg % "0.0.0.0:8080") in r.stderr, (r.returncode, r.stderr)
    r = subprocess.run([lib.BINARY, "-c", "conf/seckilld.conf", "-t"], cwd=lib.ROOT, capture_output=True, text=True,
                       timeout=30, env=env(SECKILLD_LISTEN="0.0.0.0:8080", SECKILLD_ADMIN_TOKEN="s3cret-token"))
    assert r.returncode == 0, r.stderr
    # and a start refuses it too
    rc, lines = check("return { admin_token = 'change-me' }", args=(), SECKILLD_LISTEN="0.0.0.0:%d" % lib.free_port(),
                      **no_token)
    assert rc == 1 and any("the default token" in l for l in lines), (rc, lines)


lib.main(globals())
