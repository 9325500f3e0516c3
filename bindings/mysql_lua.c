/*
 * mysql_lua.c: the `mysql` Lua module (query, transaction, null) and the binding's life cycle.
 *
 * Values bound to `?` placeholders are rendered into the statement after a connection is leased, with
 * mysql_real_escape_string on that connection (so its character set and NO_BACKSLASH_ESCAPES mode are honoured).
 * Strings that are not valid UTF-8 (binary data) go as hex literals X'..', which the utf8mb4 connection would
 * otherwise reject. The driver and the pool underneath know nothing of Lua (mysql_conn.c, mysql_pool.c).
 */
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../core/co.h"
#include "../core/config.h"
#include "../core/health.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "bindings.h"
#include "mysql_pool.h"

#define TX_MT "seckilld.mysql.tx"

/* ===== process-wide state (set in init, read-only afterwards) and per-thread pools ===== */

static struct {
    sk_mysql_target_t target;
    size_t pool_size;
    uint64_t wait_timeout_ms, idle_timeout_ms;
    char *schema_path;
    _Atomic int *health;
    struct {
        sk_counter_t *ok, *error, *timeout, *unavailable;
        sk_histogram_t *latency;
        sk_counter_t *pool_waits, *pool_wait_timeouts, *connection_errors, *connections;
    } metrics;
} mysql;

static __thread sk_mysql_pool_t *tls_pool;

static void on_pool_connect(sk_mysql_pool_t *pool)
{
    (void)pool;
    atomic_store(mysql.health, 1);
}
static void on_pool_connect_error(sk_mysql_pool_t *pool, const char *err)
{
    (void)pool;
    sk_counter_inc(mysql.metrics.connection_errors);
    if (atomic_exchange(mysql.health, 0))
        sk_warn("mysql: connection failed: %s", err);
}
static void on_pool_wait(sk_mysql_pool_t *pool)
{
    (void)pool;
    sk_counter_inc(mysql.metrics.pool_waits);
}
static void on_pool_wait_timeout(sk_mysql_pool_t *pool)
{
    (void)pool;
    sk_counter_inc(mysql.metrics.pool_wait_timeouts);
}
static void on_pool_open_delta(sk_mysql_pool_t *pool, int delta)
{
    (void)pool;
    sk_gauge_add(mysql.metrics.connections, delta);
}
static const sk_mysql_pool_hooks_t pool_hooks = {on_pool_connect, on_pool_connect_error, on_pool_wait, on_pool_wait_timeout,
                                                 on_pool_open_delta};

static sk_mysql_pool_t *get_pool(lua_State *L)
{
    if (tls_pool == NULL)
        luaL_error(L, "mysql: no connection pool on this thread");
    return tls_pool;
}

/* ===== placeholders and values ===== */

/* the offset of the next `?` placeholder at or after i, skipping quoted strings, quoted identifiers and comments;
 * len if there is none */
static size_t next_placeholder(const char *s, size_t len, size_t i)
{
    while (i < len) {
        char c = s[i];
        if (c == '?')
            return i;
        if (c == '\'' || c == '"' || c == '`') {
            for (++i; i < len && s[i] != c; ++i)
                if (s[i] == '\\' && c != '`')
                    ++i;
            ++i; /* past the closing quote ('' and "" doubling is two adjacent strings to this scanner) */
        } else if (c == '#' || (c == '-' && i + 2 < len && s[i + 1] == '-' && (s[i + 2] == ' ' || s[i + 2] == '\t'))) {
            while (i < len && s[i] != '\n')
                ++i;
        } else if (c == '/' && i + 1 < len && s[i + 1] == '*') {
            for (i += 2; i + 1 < len && !(s[i] == '*' && s[i + 1] == '/'); ++i)
                ;
            i += 2;
        } else {
            ++i;
        }
    }
    return len;
}

static int is_utf8(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned c = s[i], n;
        uint32_t cp;
        if (c < 0x80) {
            ++i;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3, cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + n >= len)
            return 0;
        for (unsigned k = 1; k <= n; ++k) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

enum { P_NULL, P_BOOL, P_INT, P_FLOAT, P_STRING };

typedef struct st_param_t {
    int type;
    union {
        long long i;
        double d;
        struct {
            const char *p;
            size_t len;
        } s;
    };
} param_t;

/* ===== a query (plain, or one step of a transaction) ===== */

enum { Q_PLAIN, Q_BEGIN, Q_TX, Q_COMMIT, Q_ROLLBACK };
enum { S_WAITING, S_RUNNING, S_DONE };

typedef struct st_tx_t tx_t;

typedef struct st_query_op_t {
    sk_co_t *co;
    sk_mysql_pool_t *pool;
    sk_mysql_waiter_t waiter;
    sk_mysql_conn_t *conn;
    tx_t *tx; /* Q_TX, Q_COMMIT, Q_ROLLBACK: the lease the connection belongs to */
    int kind;
    int state;
    uint64_t started_at;
    const char *tmpl; /* copied into the same allocation, as are the params' strings */
    size_t tmpl_len;
    size_t nparams;
    param_t *params;
    char *sql; /* the rendered statement, once a connection is leased */
    size_t sql_len;
    /* the outcome */
    MYSQL_RES *res;
    uint64_t affected_rows, insert_id;
    const char *err;
    unsigned errnum;
    char sqlstate[6];
    char errbuf[256];
} query_op_t;

/* a transaction's lease: the userdata `tx` passed to the function given to mysql.transaction */
struct st_tx_t {
    sk_mysql_conn_t *conn; /* NULL once finished (or abandoned) */
    sk_mysql_pool_t *pool;
    int busy;
    const char *outcome; /* NULL while open, then "committed" or "rolled back" */
};

static size_t rendered_size(const query_op_t *op)
{
    size_t n = op->tmpl_len + 1;
    for (size_t i = 0; i < op->nparams; ++i) {
        const param_t *p = op->params + i;
        n += p->type == P_STRING ? 2 * p->s.len + 3 : 32;
    }
    return n;
}

static char *render_param(sk_mysql_conn_t *conn, char *dst, const param_t *p)
{
    static const char hex[] = "0123456789ABCDEF";
    switch (p->type) {
    case P_NULL:
        return dst + sprintf(dst, "NULL");
    case P_BOOL:
        return dst + sprintf(dst, p->i ? "TRUE" : "FALSE");
    case P_INT:
        return dst + sprintf(dst, "%lld", p->i);
    case P_FLOAT:
        return dst + sprintf(dst, "%.17g", p->d);
    }
    if (is_utf8((const unsigned char *)p->s.p, p->s.len)) {
        *dst++ = '\'';
        dst += sk_mysql_conn_escape(conn, dst, p->s.p, p->s.len);
        *dst++ = '\'';
    } else {
        /* bytes the utf8mb4 connection would refuse as text: a hex literal is a binary string, stored as is */
        *dst++ = 'X';
        *dst++ = '\'';
        for (size_t i = 0; i < p->s.len; ++i) {
            *dst++ = hex[(unsigned char)p->s.p[i] >> 4];
            *dst++ = hex[(unsigned char)p->s.p[i] & 15];
        }
        *dst++ = '\'';
    }
    return dst;
}

static void render(query_op_t *op, sk_mysql_conn_t *conn)
{
    char *dst = op->sql = h2o_mem_alloc(rendered_size(op));
    size_t from = 0;
    for (size_t i = 0; i < op->nparams; ++i) {
        size_t at = next_placeholder(op->tmpl, op->tmpl_len, from);
        memcpy(dst, op->tmpl + from, at - from);
        dst = render_param(conn, dst + (at - from), op->params + i);
        from = at + 1;
    }
    memcpy(dst, op->tmpl + from, op->tmpl_len - from);
    dst += op->tmpl_len - from;
    op->sql_len = dst - op->sql;
}

static void free_op(query_op_t *op)
{
    if (op->res != NULL)
        mysql_free_result(op->res);
    free(op->sql);
    free(op);
}

static int push_result(lua_State *L, void *arg);

static void complete(query_op_t *op)
{
    op->state = S_DONE;
    sk_histogram_observe(mysql.metrics.latency, (sk_now_ms() - op->started_at) / 1000.0);
    sk_counter_inc(op->err == NULL                     ? mysql.metrics.ok
                   : op->err == sk_mysql_error_timeout ? mysql.metrics.timeout
                   : op->errnum == 0                   ? mysql.metrics.unavailable
                                                       : mysql.metrics.error);
    sk_co_wake(op->co, push_result, op);
}

static void fail(query_op_t *op, const char *err, unsigned errnum, const char *sqlstate)
{
    snprintf(op->errbuf, sizeof(op->errbuf), "%s", err);
    op->err = err == sk_mysql_error_timeout ? sk_mysql_error_timeout : op->errbuf;
    op->errnum = errnum;
    snprintf(op->sqlstate, sizeof(op->sqlstate), "%s", sqlstate != NULL ? sqlstate : "");
}

static void on_query_done(sk_mysql_conn_t *conn, const char *err)
{
    query_op_t *op = conn->lessee;
    conn->lessee = NULL;
    if (err != NULL) {
        fail(op, err, conn->error.errnum, conn->error.sqlstate);
        if (err == sk_mysql_error_timeout)
            op->errnum = 0;
    } else {
        op->res = sk_mysql_conn_take_result(conn);
        op->affected_rows = conn->affected_rows;
        op->insert_id = conn->insert_id;
    }
    switch (op->kind) {
    case Q_PLAIN:
        sk_mysql_pool_release(op->pool, conn);
        op->conn = NULL;
        break;
    case Q_BEGIN:
        if (err != NULL) {
            sk_mysql_pool_release(op->pool, conn);
            op->conn = NULL;
        }
        break; /* else push_result hands the connection to a new tx */
    case Q_TX:
        op->tx->busy = 0;
        break;
    case Q_COMMIT:
    case Q_ROLLBACK:
        /* the pool rolls back whatever a failed COMMIT left open, or closes a lost link */
        op->tx->conn = NULL;
        op->tx->busy = 0;
        op->tx->outcome = op->kind == Q_COMMIT && err == NULL ? "committed" : "rolled back";
        sk_mysql_pool_release(op->pool, conn);
        op->conn = NULL;
        break;
    }
    complete(op);
}

static void run(query_op_t *op, sk_mysql_conn_t *conn)
{
    op->state = S_RUNNING;
    op->conn = conn;
    conn->lessee = op;
    render(op, conn);
    sk_mysql_conn_query(conn, op->sql, op->sql_len, mysql.target.query_timeout_ms, on_query_done);
}

static void on_acquired(sk_mysql_waiter_t *waiter, sk_mysql_conn_t *conn, const char *err)
{
    query_op_t *op = H2O_STRUCT_FROM_MEMBER(query_op_t, waiter, waiter);
    if (err != NULL) {
        fail(op, err, 0, NULL);
        complete(op);
        return;
    }
    run(op, conn);
}

static void cancel_query(void *arg)
{
    query_op_t *op = arg;
    switch (op->state) {
    case S_WAITING:
        sk_mysql_pool_cancel(&op->waiter);
        break;
    case S_RUNNING:
        /* the statement cannot be taken back: the link goes, so nothing half-read ever reaches another lease */
        if (op->tx != NULL) {
            op->tx->conn = NULL;
            op->tx->busy = 0;
            op->tx->outcome = "rolled back";
        }
        op->conn->lessee = NULL;
        sk_mysql_pool_discard(op->pool, op->conn);
        break;
    case S_DONE:
        if (op->kind == Q_BEGIN && op->conn != NULL)
            sk_mysql_pool_release(op->pool, op->conn); /* IN_TRANS: the pool rolls back */
        break;
    }
    free_op(op);
}

static void push_value(lua_State *L, const MYSQL_FIELD *f, const char *v, unsigned long len)
{
    if (v == NULL) {
        lua_pushlightuserdata(L, NULL); /* mysql.null, which is also json.null */
        return;
    }
    switch (f->type) {
    case MYSQL_TYPE_TINY:
    case MYSQL_TYPE_SHORT:
    case MYSQL_TYPE_LONG:
    case MYSQL_TYPE_INT24:
    case MYSQL_TYPE_LONGLONG:
    case MYSQL_TYPE_YEAR: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno == 0 && end == v + len) {
            lua_pushinteger(L, (lua_Integer)n);
            return;
        }
        break; /* BIGINT UNSIGNED above 2^63-1: kept exact, as a string */
    }
    case MYSQL_TYPE_FLOAT:
    case MYSQL_TYPE_DOUBLE:
        lua_pushnumber(L, strtod(v, NULL));
        return;
    default:
        break;
    }
    lua_pushlstring(L, v, len);
}

static void push_rows(lua_State *L, MYSQL_RES *res)
{
    unsigned nfields = mysql_num_fields(res);
    MYSQL_FIELD *fields = mysql_fetch_fields(res);
    lua_createtable(L, (int)mysql_num_rows(res), 0);
    MYSQL_ROW row;
    for (lua_Integer r = 1; (row = mysql_fetch_row(res)) != NULL; ++r) {
        unsigned long *lengths = mysql_fetch_lengths(res);
        lua_createtable(L, 0, (int)nfields);
        for (unsigned i = 0; i < nfields; ++i) {
            lua_pushlstring(L, fields[i].name, fields[i].name_length);
            push_value(L, fields + i, row[i], lengths[i]);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, -2, r);
    }
}

static int push_tx(lua_State *L, query_op_t *op);

static int push_result(lua_State *L, void *arg)
{
    query_op_t *op = arg;
    int n;
    if (op->err != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, op->err);
        if (op->errnum != 0) {
            lua_pushinteger(L, op->errnum);
            lua_pushstring(L, op->sqlstate);
            n = 4;
        } else {
            n = 2;
        }
    } else if (op->kind == Q_BEGIN) {
        n = push_tx(L, op);
    } else if (op->kind == Q_COMMIT || op->kind == Q_ROLLBACK) {
        lua_pushboolean(L, 1);
        n = 1;
    } else if (op->res != NULL) {
        push_rows(L, op->res);
        n = 1;
    } else {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, (lua_Integer)op->affected_rows);
        lua_setfield(L, -2, "affected_rows");
        lua_pushinteger(L, (lua_Integer)op->insert_id);
        lua_setfield(L, -2, "insert_id");
        n = 1;
    }
    free_op(op);
    return n;
}

/* Builds the op from the Lua arguments sql at index `first` and its values after it. Misuse raises: a count of
 * values that does not match the placeholders, or a value that has no SQL form. */
static query_op_t *new_op(lua_State *L, int first, int kind)
{
    size_t tmpl_len, nph = 0, strings = 0;
    const char *tmpl = luaL_checklstring(L, first, &tmpl_len);
    int nargs = lua_gettop(L) - first;
    for (size_t at = 0; (at = next_placeholder(tmpl, tmpl_len, at)) < tmpl_len; ++at)
        ++nph;
    if ((size_t)nargs != nph)
        luaL_error(L, "mysql: the statement has %d placeholder(s) but %d value(s) were given", (int)nph, nargs);
    for (int i = first + 1; i <= first + nargs; ++i) {
        switch (lua_type(L, i)) {
        case LUA_TNIL:
        case LUA_TBOOLEAN:
            break;
        case LUA_TNUMBER:
            if (!lua_isinteger(L, i) && !isfinite(lua_tonumber(L, i)))
                luaL_argerror(L, i, "cannot send inf or nan to mysql");
            break;
        case LUA_TSTRING:
            strings += lua_rawlen(L, i);
            break;
        case LUA_TLIGHTUSERDATA:
            if (lua_touserdata(L, i) == NULL)
                break; /* mysql.null */
            /* fallthrough */
        default:
            luaL_argerror(L, i, lua_pushfstring(L, "cannot send a %s to mysql", luaL_typename(L, i)));
        }
    }
    query_op_t *op = h2o_mem_alloc(sizeof(*op) + nph * sizeof(param_t) + tmpl_len + strings);
    *op = (query_op_t){.kind = kind, .nparams = nph, .tmpl_len = tmpl_len, .started_at = sk_now_ms()};
    op->params = (param_t *)(op + 1);
    char *buf = (char *)(op->params + nph);
    memcpy(buf, tmpl, tmpl_len);
    op->tmpl = buf;
    buf += tmpl_len;
    for (size_t k = 0; k < nph; ++k) {
        int i = first + 1 + (int)k;
        param_t *p = op->params + k;
        switch (lua_type(L, i)) {
        case LUA_TBOOLEAN:
            *p = (param_t){.type = P_BOOL, .i = lua_toboolean(L, i)};
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, i))
                *p = (param_t){.type = P_INT, .i = lua_tointeger(L, i)};
            else
                *p = (param_t){.type = P_FLOAT, .d = lua_tonumber(L, i)};
            break;
        case LUA_TSTRING: {
            size_t len;
            const char *s = lua_tolstring(L, i, &len);
            memcpy(buf, s, len);
            *p = (param_t){.type = P_STRING, .s = {buf, len}};
            buf += len;
            break;
        }
        default:
            *p = (param_t){.type = P_NULL};
            break;
        }
    }
    return op;
}

/* ===== mysql.query(sql, ...) ===== */

static int start_leased(lua_State *L, query_op_t *op)
{
    sk_mysql_conn_t *conn;
    const char *err;
    switch (sk_mysql_pool_acquire(op->pool, &op->waiter, on_acquired, &conn, &err)) {
    case 1:
        run(op, conn);
        break;
    case 0:
        op->state = S_WAITING;
        break;
    default:
        /* known to be down: answer now, without parking */
        sk_counter_inc(mysql.metrics.unavailable);
        free_op(op);
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    return sk_co_yield(L, op->co, cancel_query, op);
}

static int l_query(lua_State *L)
{
    sk_co_t *co = sk_co_check(L);
    sk_mysql_pool_t *pool = get_pool(L);
    query_op_t *op = new_op(L, 1, Q_PLAIN);
    op->co = co;
    op->pool = pool;
    return start_leased(L, op);
}

/* ===== transactions: begin() -> tx; tx:query(), tx:commit(), tx:rollback() ===== */

static int l_begin(lua_State *L)
{
    sk_co_t *co = sk_co_check(L);
    sk_mysql_pool_t *pool = get_pool(L);
    lua_settop(L, 0);
    lua_pushliteral(L, "BEGIN");
    query_op_t *op = new_op(L, 1, Q_BEGIN);
    op->co = co;
    op->pool = pool;
    return start_leased(L, op);
}

static int push_tx(lua_State *L, query_op_t *op)
{
    tx_t *tx = lua_newuserdatauv(L, sizeof(*tx), 0);
    *tx = (tx_t){.conn = op->conn, .pool = op->pool};
    op->conn = NULL; /* now the tx's */
    luaL_setmetatable(L, TX_MT);
    return 1;
}

static tx_t *check_tx(lua_State *L)
{
    tx_t *tx = luaL_checkudata(L, 1, TX_MT);
    if (tx->conn == NULL)
        luaL_error(L, "mysql: the transaction is finished");
    if (tx->busy)
        luaL_error(L, "mysql: the transaction is already running a statement");
    return tx;
}

static int tx_run(lua_State *L, tx_t *tx, query_op_t *op, sk_co_t *co)
{
    op->co = co;
    op->pool = tx->pool;
    op->tx = tx;
    if (!tx->conn->connected) {
        /* the link broke on an earlier statement: no statement of this transaction can succeed any more */
        if (op->kind != Q_TX) {
            sk_mysql_pool_release(tx->pool, tx->conn);
            tx->conn = NULL;
            tx->outcome = "rolled back";
        }
        free_op(op);
        lua_pushnil(L);
        lua_pushliteral(L, "connection lost");
        return 2;
    }
    tx->busy = 1;
    run(op, tx->conn);
    return sk_co_yield(L, co, cancel_query, op);
}

static int l_tx_query(lua_State *L)
{
    tx_t *tx = check_tx(L);
    sk_co_t *co = sk_co_check(L);
    return tx_run(L, tx, new_op(L, 2, Q_TX), co);
}

static int tx_finish(lua_State *L, const char *sql, int kind)
{
    tx_t *tx = check_tx(L);
    sk_co_t *co = sk_co_check(L);
    lua_settop(L, 1);
    lua_pushstring(L, sql);
    return tx_run(L, tx, new_op(L, 2, kind), co);
}

static int l_tx_commit(lua_State *L)
{
    return tx_finish(L, "COMMIT", Q_COMMIT);
}

static int l_tx_rollback(lua_State *L)
{
    return tx_finish(L, "ROLLBACK", Q_ROLLBACK);
}

static int l_tx_finished(lua_State *L)
{
    tx_t *tx = luaL_checkudata(L, 1, TX_MT);
    if (tx->outcome != NULL)
        lua_pushstring(L, tx->outcome);
    else
        lua_pushboolean(L, tx->conn == NULL);
    return 1;
}

static int l_tx_gc(lua_State *L)
{
    tx_t *tx = luaL_checkudata(L, 1, TX_MT);
    /* dropped unfinished (its coroutine was abandoned): the pool rolls back before anyone else gets the link */
    if (tx->conn != NULL && !tx->busy)
        sk_mysql_pool_release(tx->pool, tx->conn);
    tx->conn = NULL;
    return 0;
}

/* mysql.transaction(fn), in Lua over the primitives above: pcall may yield in Lua 5.4, so fn may call tx:query */
static const char transaction_lua[] =
    "local begin, pack, unpack, pcall, type, error = ...\n"
    "return function(fn)\n"
    "    if type(fn) ~= 'function' then\n"
    "        error(\"bad argument #1 to 'transaction' (function expected, got \" .. type(fn) .. ')', 2)\n"
    "    end\n"
    "    local tx, err, errno, sqlstate = begin()\n"
    "    if not tx then return nil, err, errno, sqlstate end\n"
    "    local r = pack(pcall(fn, tx))\n"
    "    if not r[1] then\n"
    "        if not tx:finished() then tx:rollback() end\n"
    "        return nil, r[2]\n"
    "    end\n"
    "    local done = tx:finished()\n"
    "    if done == 'committed' then return true, unpack(r, 2, r.n) end\n"
    "    if done then return nil, 'rolled back' end\n"
    "    if r.n >= 3 and not r[2] and r[3] ~= nil then\n"
    "        tx:rollback()\n"
    "        return nil, r[3], r[4], r[5]\n"
    "    end\n"
    "    local ok, cerr, cerrno, csqlstate = tx:commit()\n"
    "    if not ok then return nil, cerr, cerrno, csqlstate end\n"
    "    return true, unpack(r, 2, r.n)\n"
    "end\n";

/* ===== the module ===== */

static void open_mysql(lua_State *L)
{
    static const luaL_Reg tx_methods[] = {
        {"query", l_tx_query}, {"commit", l_tx_commit}, {"rollback", l_tx_rollback}, {"finished", l_tx_finished}, {NULL, NULL}};
    if (luaL_newmetatable(L, TX_MT)) {
        luaL_newlib(L, tx_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_tx_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushliteral(L, "mysql transaction");
        lua_setfield(L, -2, "__name");
    }
    lua_pop(L, 1);

    lua_createtable(L, 0, 4);
    lua_pushcfunction(L, l_query);
    lua_setfield(L, -2, "query");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    if (luaL_loadbuffer(L, transaction_lua, sizeof(transaction_lua) - 1, "=mysql.transaction") != LUA_OK)
        lua_error(L);
    lua_pushcfunction(L, l_begin);
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "pack");
    lua_getfield(L, -2, "unpack");
    lua_remove(L, -3);
    lua_getglobal(L, "pcall");
    lua_getglobal(L, "type");
    lua_getglobal(L, "error");
    lua_call(L, 6, 1);
    lua_setfield(L, -2, "transaction");
    lua_setglobal(L, "mysql");
}

/* ===== life cycle ===== */

static void on_schema_applied(void)
{
    atomic_store(mysql.health, 1);
}

static int init_mysql(sk_config_t *cfg, unsigned nthreads)
{
    (void)nthreads;
    char err[512];
    const char *url = sk_config_get_string(cfg, "mysql.url", "mysql://seckill:seckill@127.0.0.1:3306/seckill");
    uint64_t connect_ms = (uint64_t)sk_config_get_int(cfg, "mysql.connect_timeout_ms", 2000);
    uint64_t query_ms = (uint64_t)sk_config_get_int(cfg, "mysql.query_timeout_ms", 5000);
    if (sk_mysql_target_init(&mysql.target, url, connect_ms, query_ms, err, sizeof(err)) != 0) {
        sk_error("%s", err);
        return -1;
    }
    long long pool_size = sk_config_get_int(cfg, "mysql.pool_size", 4);
    mysql.pool_size = pool_size > 0 ? (size_t)pool_size : 1;
    mysql.wait_timeout_ms = (uint64_t)sk_config_get_int(cfg, "mysql.wait_timeout_ms", 2000);
    mysql.idle_timeout_ms = (uint64_t)sk_config_get_int(cfg, "mysql.idle_timeout_ms", 60000);

    static const char *results[] = {"ok", "error", "timeout", "unavailable"};
    sk_counter_t **counters[] = {&mysql.metrics.ok, &mysql.metrics.error, &mysql.metrics.timeout, &mysql.metrics.unavailable};
    for (size_t i = 0; i < 4; ++i) {
        char labels[64];
        snprintf(labels, sizeof(labels), "result=\"%s\"", results[i]);
        *counters[i] = sk_metrics_counter("seckilld_mysql_queries_total", "MySQL statements by result", labels);
    }
    mysql.metrics.latency =
        sk_metrics_histogram("seckilld_mysql_query_duration_seconds", "MySQL statement latency, pool wait included", "",
                             sk_metrics_latency_bounds, sk_metrics_latency_nbounds);
    mysql.metrics.pool_waits =
        sk_metrics_counter("seckilld_mysql_pool_waits_total", "statements that waited for a pooled connection", "");
    mysql.metrics.pool_wait_timeouts =
        sk_metrics_counter("seckilld_mysql_pool_wait_timeouts_total", "pool waits that ran past mysql.wait_timeout_ms", "");
    mysql.metrics.connection_errors =
        sk_metrics_counter("seckilld_mysql_connection_errors_total", "failed attempts to connect to MySQL", "");
    mysql.metrics.connections = sk_metrics_gauge("seckilld_mysql_connections", "open MySQL connections, all threads", "");
    mysql.health = sk_health_register("mysql");

    /* the schema file sits next to the config file unless mysql.schema says otherwise */
    const char *schema = sk_config_get_string(cfg, "mysql.schema", NULL);
    if (schema != NULL) {
        mysql.schema_path = h2o_strdup(NULL, schema, SIZE_MAX).base;
    } else {
        const char *slash = cfg->path != NULL ? strrchr(cfg->path, '/') : NULL;
        int dirlen = slash != NULL ? (int)(slash - cfg->path) : 1;
        mysql.schema_path = h2o_mem_alloc(dirlen + sizeof("/schema.sql"));
        sprintf(mysql.schema_path, "%.*s/schema.sql", dirlen, slash != NULL ? cfg->path : ".");
    }
    if (sk_mysql_schema_apply(&mysql.target, mysql.schema_path, err, sizeof(err)) == 0) {
        atomic_store(mysql.health, 1);
    } else {
        sk_warn("mysql: cannot apply the schema now, serving anyway and retrying in the background: %s", err);
        atomic_store(mysql.health, 0);
        sk_mysql_schema_retry_start(&mysql.target, mysql.schema_path, on_schema_applied);
    }
    return 0;
}

static void thread_init_mysql(sk_loop_t *loop)
{
    tls_pool = sk_mysql_pool_new(loop, &mysql.target, mysql.pool_size, mysql.wait_timeout_ms, mysql.idle_timeout_ms, &pool_hooks);
}

static void thread_dispose_mysql(sk_loop_t *loop)
{
    (void)loop;
    if (tls_pool != NULL) {
        sk_mysql_pool_dispose(tls_pool);
        tls_pool = NULL;
    }
}

static void shutdown_mysql(void)
{
    sk_mysql_schema_retry_stop();
    sk_mysql_target_dispose(&mysql.target);
    free(mysql.schema_path);
    mysql.schema_path = NULL;
}

const sk_binding_t sk_binding_mysql = {
    .name = "mysql",
    .init = init_mysql,
    .thread_init = thread_init_mysql,
    .open = open_mysql,
    .thread_dispose = thread_dispose_mysql,
    .shutdown = shutdown_mysql,
};
