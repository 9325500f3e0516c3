/*
 * mysql_lua.c: the `mysql` Lua module (query, null) and the binding's life cycle, plus the statement op that
 * mysql.query and mysql.transaction share: lease a connection, render, send, complete, wake the coroutine.
 *
 * Rendering `?` values into SQL and results into Lua values is mysql_sql.c; mysql.transaction is mysql_tx.c (the
 * three share mysql_lua_internal.h). The driver and the pool underneath know nothing of Lua (mysql_conn.c,
 * mysql_pool.c).
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/co.h"
#include "../../core/config.h"
#include "../../core/health.h"
#include "../../core/log.h"
#include "../../core/metrics.h"
#include "../bindings.h"
#include "lua_internal.h"
#include "schema.h"

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

sk_mysql_pool_t *sk_mysql_lua_check_pool(lua_State *L)
{
    if (tls_pool == NULL)
        luaL_error(L, "mysql: no connection pool on this thread");
    return tls_pool;
}

/* ===== a statement (plain, or one step of a transaction) ===== */

void sk_mysql_op_free(sk_mysql_op_t *op)
{
    if (op->res != NULL)
        mysql_free_result(op->res);
    free(op->sql);
    free(op);
}

static int push_result(lua_State *L, void *arg);

static void complete(sk_mysql_op_t *op)
{
    op->state = SK_MYSQL_S_DONE;
    sk_histogram_observe(mysql.metrics.latency, (sk_now_ms() - op->started_at) / 1000.0);
    sk_counter_inc(op->super.err == NULL                   ? mysql.metrics.ok
                   : op->super.err == sk_mysql_err_timeout ? mysql.metrics.timeout
                   : op->super.err != sk_mysql_err_failed  ? mysql.metrics.unavailable
                                                           : mysql.metrics.error);
    sk_op_wake(&op->super, push_result);
}

/* records a failure: err is the completion's errstr, msg what Lua sees */
static void fail(sk_mysql_op_t *op, const char *err, const char *msg, unsigned errnum, const char *sqlstate)
{
    op->super.err = err;
    snprintf(op->errbuf, sizeof(op->errbuf), "%s", msg);
    op->errmsg = op->errbuf;
    op->errnum = errnum;
    snprintf(op->sqlstate, sizeof(op->sqlstate), "%s", sqlstate != NULL ? sqlstate : "");
}

static void on_query_done(sk_op_t *super, sk_mysql_conn_t *conn, const char *err)
{
    sk_mysql_op_t *op = (sk_mysql_op_t *)super;
    if (err != NULL) {
        /* a timeout has no server error number: Lua gets nil, "timeout" */
        fail(op, err, conn->error.message, err == sk_mysql_err_timeout ? 0 : conn->error.errnum, conn->error.sqlstate);
    } else {
        op->res = sk_mysql_conn_take_result(conn);
        op->affected_rows = conn->affected_rows;
        op->insert_id = conn->insert_id;
    }
    switch (op->kind) {
    case SK_MYSQL_Q_PLAIN:
        sk_mysql_pool_release(op->pool, conn);
        op->conn = NULL;
        break;
    case SK_MYSQL_Q_BEGIN:
        if (err != NULL) {
            sk_mysql_pool_release(op->pool, conn);
            op->conn = NULL;
        }
        break; /* else push_result hands the connection to a new tx */
    case SK_MYSQL_Q_TX:
        op->tx->busy = 0;
        break;
    case SK_MYSQL_Q_COMMIT:
    case SK_MYSQL_Q_ROLLBACK:
        /* the pool rolls back whatever a failed COMMIT left open, or closes a lost link */
        op->tx->conn = NULL;
        op->tx->busy = 0;
        op->tx->outcome = op->kind == SK_MYSQL_Q_COMMIT && err == NULL ? "committed" : "rolled back";
        sk_mysql_pool_release(op->pool, conn);
        op->conn = NULL;
        break;
    }
    complete(op);
}

void sk_mysql_op_run(sk_mysql_op_t *op, sk_mysql_conn_t *conn)
{
    op->state = SK_MYSQL_S_RUNNING;
    op->conn = conn;
    sk_mysql_op_render(op, conn);
    sk_mysql_conn_query(conn, &op->super, op->sql, op->sql_len, mysql.target.query_timeout_ms, on_query_done);
}

static void on_acquired(sk_op_t *super, sk_mysql_conn_t *conn, const char *err)
{
    sk_mysql_op_t *op = (sk_mysql_op_t *)super;
    if (err != NULL) {
        fail(op, err, err == sk_mysql_err_unavailable ? sk_mysql_pool_last_error(op->pool) : err, 0, NULL);
        complete(op);
        return;
    }
    sk_mysql_op_run(op, conn);
}

void sk_mysql_op_cancel(void *arg)
{
    sk_mysql_op_t *op = arg;
    switch (op->state) {
    case SK_MYSQL_S_WAITING:
        sk_mysql_pool_cancel(&op->waiter);
        break;
    case SK_MYSQL_S_RUNNING:
        /* the statement cannot be taken back: the link goes, so nothing half-read ever reaches another lease */
        if (op->tx != NULL) {
            op->tx->conn = NULL;
            op->tx->busy = 0;
            op->tx->outcome = "rolled back";
        }
        sk_mysql_pool_discard(op->pool, op->conn);
        break;
    case SK_MYSQL_S_DONE:
        if (op->kind == SK_MYSQL_Q_BEGIN && op->conn != NULL)
            sk_mysql_pool_release(op->pool, op->conn); /* IN_TRANS: the pool rolls back */
        break;
    }
    sk_mysql_op_free(op);
}

static int push_result(lua_State *L, void *arg)
{
    sk_mysql_op_t *op = arg;
    int n;
    if (op->super.err != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, op->errmsg);
        if (op->errnum != 0) {
            lua_pushinteger(L, op->errnum);
            lua_pushstring(L, op->sqlstate);
            n = 4;
        } else {
            n = 2;
        }
    } else if (op->kind == SK_MYSQL_Q_BEGIN) {
        n = sk_mysql_tx_push(L, op);
    } else if (op->kind == SK_MYSQL_Q_COMMIT || op->kind == SK_MYSQL_Q_ROLLBACK) {
        lua_pushboolean(L, 1);
        n = 1;
    } else if (op->res != NULL) {
        sk_mysql_lua_push_rows(L, op->res);
        n = 1;
    } else {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, (lua_Integer)op->affected_rows);
        lua_setfield(L, -2, "affected_rows");
        lua_pushinteger(L, (lua_Integer)op->insert_id);
        lua_setfield(L, -2, "insert_id");
        n = 1;
    }
    sk_mysql_op_free(op);
    return n;
}

/* ===== mysql.query(sql, ...) ===== */

int sk_mysql_op_start_leased(lua_State *L, sk_mysql_op_t *op)
{
    sk_mysql_conn_t *conn;
    const char *err;
    switch (sk_mysql_pool_acquire(op->pool, &op->waiter, &op->super, on_acquired, &conn, &err)) {
    case 1:
        sk_mysql_op_run(op, conn);
        break;
    case 0:
        op->state = SK_MYSQL_S_WAITING;
        break;
    default:
        /* known to be down: answer now, without parking */
        sk_counter_inc(mysql.metrics.unavailable);
        lua_pushnil(L);
        lua_pushstring(L, err == sk_mysql_err_unavailable ? sk_mysql_pool_last_error(op->pool) : err);
        sk_mysql_op_free(op);
        return 2;
    }
    return sk_op_yield(L, &op->super, sk_mysql_op_cancel);
}

static int l_query(lua_State *L)
{
    sk_co_t *co = sk_co_check(L);
    sk_mysql_pool_t *pool = sk_mysql_lua_check_pool(L);
    sk_mysql_op_t *op = sk_mysql_op_new(L, 1, SK_MYSQL_Q_PLAIN);
    op->super.co = co;
    op->pool = pool;
    return sk_mysql_op_start_leased(L, op);
}

/* ===== the module ===== */

static void open_mysql(lua_State *L)
{
    lua_createtable(L, 0, 4);
    lua_pushcfunction(L, l_query);
    lua_setfield(L, -2, "query");
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    sk_mysql_tx_open(L);
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
