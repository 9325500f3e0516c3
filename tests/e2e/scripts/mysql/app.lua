-- tests/e2e/40_mysql.py drives these routes: each one exercises a part of the mysql binding and answers with what
-- it observed, so the test can compare it with what MariaDB holds.

local function failure(err, errno, sqlstate)
    return { ok = false, err = err, errno = errno, sqlstate = sqlstate }
end

local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

app.route("GET", "/ping", function()
    return 200, { ok = true }
end)

-- DDL goes through mysql.query too
app.route("POST", "/setup", function()
    for _, sql in ipairs({
        "DROP TABLE IF EXISTS t_types",
        "DROP TABLE IF EXISTS t_kv",
        "DROP PROCEDURE IF EXISTS p_dirty",
        -- opens a transaction it never ends, and answers with a result set plus a final status
        [[CREATE PROCEDURE p_dirty() BEGIN START TRANSACTION; INSERT INTO t_kv (k, v) VALUES ('proc', 'x');
          SELECT 1 AS one; END]],
        [[CREATE TABLE t_types (id INT PRIMARY KEY, i INT, b BIGINT, u BIGINT UNSIGNED, d DECIMAL(12,2), f DOUBLE,
          t TINYINT, v VARCHAR(100), dt DATETIME(3), n INT NULL, bl BLOB) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4]],
        [[CREATE TABLE t_kv (k VARCHAR(64) PRIMARY KEY, v TEXT, b BLOB) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4]],
    }) do
        local res, err, errno = mysql.query(sql)
        if not res then return 500, failure(err, errno) end
    end
    return 200, { ok = true }
end)

app.route("POST", "/types", function()
    local res, err, errno, sqlstate = mysql.query(
        "INSERT INTO t_types (id, i, b, u, d, f, t, v, dt, n, bl) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        1, -2147483648, 9007199254740993, "18446744073709551615", "12345.67", 1.5, true, "héllo ✓ 😀",
        "2024-02-29 12:34:56.789", nil, "\0a\0\255\0")
    if not res then return 500, failure(err, errno, sqlstate) end
    local rows = assert(mysql.query("SELECT * FROM t_types WHERE id = ?", 1))
    local r = rows[1]
    return 200, {
        affected_rows = res.affected_rows,
        i = r.i, i_type = math.type(r.i),
        b = r.b, b_type = math.type(r.b), b_exact = r.b == 9007199254740993,
        u = r.u, u_type = type(r.u),
        d = r.d, d_type = type(r.d),
        f = r.f, f_type = math.type(r.f),
        t = r.t,
        v = r.v,
        dt = r.dt, dt_type = type(r.dt),
        n_is_null = r.n == mysql.null, n = r.n,
        bl_hex = hex(r.bl), bl_len = #r.bl,
    }
end)

-- stores a string three ways (as key, text and blob), reads it back by value, and counts matches of an injection
app.route("POST", "/roundtrip", function(req)
    local body = req:json()
    local s, key = body.s, body.key
    local res, err, errno = mysql.query("INSERT INTO t_kv (k, v, b) VALUES (?, ?, ?)", key, s, s)
    if not res then return 500, failure(err, errno) end
    local rows = assert(mysql.query("SELECT k, v, b FROM t_kv WHERE v = ? AND b = ?", s, s))
    local all = assert(mysql.query("SELECT COUNT(*) AS c FROM t_kv"))
    local by_key = assert(mysql.query("SELECT COUNT(*) AS c FROM t_kv WHERE k = ?", s))
    return 200, {
        matches = #rows,
        same_v = rows[1] ~= nil and rows[1].v == s,
        same_b = rows[1] ~= nil and rows[1].b == s,
        v_hex = rows[1] and hex(rows[1].v),
        total = all[1].c,
        rows_with_key_s = by_key[1].c,
    }
end)

app.route("POST", "/binary", function()
    local s = ""
    for i = 0, 255 do s = s .. string.char(i) end
    s = s .. "\0\0'\\\"" .. s
    local res, err, errno = mysql.query("INSERT INTO t_kv (k, v, b) VALUES ('bin', NULL, ?)", s)
    if not res then return 500, failure(err, errno) end
    local rows = assert(mysql.query("SELECT b, v FROM t_kv WHERE k = 'bin'"))
    return 200, { same = rows[1].b == s, len = #rows[1].b, v_null = rows[1].v == mysql.null }
end)

app.route("POST", "/dup", function()
    assert(mysql.query("INSERT INTO t_kv (k, v) VALUES ('dup', 'first')"))
    local res, err, errno, sqlstate = mysql.query("INSERT INTO t_kv (k, v) VALUES (?, ?)", "dup", "second")
    return 200, { res = res, err = err, errno = errno, sqlstate = sqlstate }
end)

app.route("POST", "/tx/{mode}", function(req)
    local mode = req.params.mode
    local ok, err, errno, extra = mysql.transaction(function(tx)
        local r1 = assert(tx:query("INSERT INTO t_kv (k, v) VALUES (?, ?)", mode .. "-1", "a"))
        sleep(5) -- the function may yield between statements
        local r2 = assert(tx:query("INSERT INTO t_kv (k, v) VALUES (?, ?)", mode .. "-2", "b"))
        local inside = assert(tx:query("SELECT COUNT(*) AS c FROM t_kv WHERE k LIKE ?", mode .. "-%"))
        if mode == "error" then error("boom") end
        if mode == "nilerr" then return nil, "changed my mind" end
        if mode == "selfcommit" then
            assert(tx:commit())
            assert(tx:finished() == "committed")
            return "done", 2
        end
        if mode == "dup" then
            local res, derr, derrno = tx:query("INSERT INTO t_kv (k, v) VALUES (?, ?)", mode .. "-1", "again")
            assert(not res and derrno == 1062, "expected a duplicate key error")
            error({ code = derrno })
        end
        return inside[1].c, r1.affected_rows + r2.affected_rows
    end)
    local rows = assert(mysql.query("SELECT COUNT(*) AS c FROM t_kv WHERE k LIKE ?", mode .. "-%"))
    return 200, {
        ok = ok, err = type(err) == "table" and err.code or err, errno = errno, extra = extra,
        rows_after = rows[1].c,
    }
end)

-- n round trips, each checked against the values sent
app.route("GET", "/q/{id}", function(req)
    local id = tonumber(req.params.id)
    local n = tonumber(req.query.n or "10")
    local good = 0
    for i = 1, n do
        local rows, err, errno = mysql.query("SELECT ? AS a, ? AS s", id * 1000 + i, "s'" .. id .. "\\" .. i)
        if not rows then return 503, failure(err, errno) end
        if rows[1].a == id * 1000 + i and rows[1].s == "s'" .. id .. "\\" .. i then good = good + 1 end
    end
    return 200, { ok = true, good = good }
end)

-- a statement that runs s seconds (3 unless ?s=)
app.route("GET", "/sleep", function(req)
    local t0 = now()
    local res, err, errno = mysql.query("SELECT SLEEP(?) AS s", tonumber(req.query.s) or 3)
    local took = now() - t0
    local after = mysql.query("SELECT 'after' AS v, @@autocommit AS ac")
    return 200, { res = res, err = err, errno = errno, took_ms = took, after = after and after[1].v, ac = after and after[1].ac }
end)

-- leaves session state behind on purpose (with a pool of one link, the next lease gets this session back):
-- the pool must roll back / reset it first
app.route("POST", "/dirty", function()
    assert(mysql.query("BEGIN"))
    return 200, { ok = true }
end)

app.route("POST", "/dirty-autocommit", function()
    assert(mysql.query("SET autocommit = 0"))
    return 200, { ok = true }
end)

app.route("GET", "/state", function()
    local rows = assert(mysql.query("SELECT @@autocommit AS ac, @@in_transaction AS tx"))
    return 200, rows[1]
end)

app.route("GET", "/misuse", function()
    local ok, err = pcall(mysql.query, "SELECT ?, ?", 1)
    local ok2, err2 = pcall(mysql.query, "SELECT ?", {})
    local ok3, err3 = pcall(mysql.query, "SELECT '?' AS q, ? AS v -- ?", 7)
    return 200, { count = err, table = err2, quoted_ok = ok3 }
end)

app.route("GET", "/quoted", function()
    local rows = assert(mysql.query("SELECT '?' AS q, \"?\" AS d, ? AS v /* ? */ -- ?\n", 7))
    return 200, rows[1]
end)

-- the benchmark's statement: one primary-key lookup
app.route("GET", "/bench/{id}", function(req)
    local rows, err = mysql.query("SELECT id, v FROM t_bench WHERE id = ?", tonumber(req.params.id))
    if not rows then return 503, failure(err) end
    return 200, rows[1] or { missing = true }
end)

-- CALL answers with a result set and then a final status: the driver must drain both before the link is reused
app.route("POST", "/call", function()
    local rows, err, errno = mysql.query("CALL p_dirty()")
    if not rows then return 500, failure(err, errno) end
    return 200, rows[1]
end)

-- a transaction that holds its link until a drain gives up on it: parked between statements, or in one (for s
-- seconds, 3 unless ?s=)
app.route("POST", "/tx-hold/{how}", function(req)
    local how = req.params.how
    local s = tonumber(req.query.s) or 3
    local ok, err = mysql.transaction(function(tx)
        assert(tx:query("INSERT INTO t_kv (k, v) VALUES (?, ?)", "abandoned-" .. how, "a"))
        if how == "query" then
            assert(tx:query("SELECT SLEEP(?) AS s", s))
        else
            sleep(s * 1000)
        end
    end)
    return 200, { ok = ok, err = err }
end)
