/*
 * lua_module.c: the `mysql` Lua module (query, null; transaction comes from lua_tx.c), its config, metrics and
 * health, and the binding's life cycle (the schema at start-up, a pool per loop thread).
 *
 * A statement's run (lease, render, send, complete, wake) is lua_stmt.c; Lua values into SQL is lua_sql.c. The
 * driver and the pool underneath know nothing of Lua (conn.c, pool.c); the start-up work is schema.c.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/config.h"
#include "../../core/health.h"
#include "../../core/log.h"
#include "../../core/metrics.h"
#include "../bindings.h"
#include "lua_internal.h"
#include "schema.h"

/* ===== process-wide state (set in init, read-only afterwards) ===== */

static struct {
    sk_mysql_target_t target;
    size_t pool_size;
    uint64_t wait_timeout_ms, idle_timeout_ms;
    char *schema_path;
    _Atomic int *health;
    struct {
        sk_counter_t *pool_waits, *pool_wait_timeouts, *connection_errors, *connections;
    } metrics;
} mysql;

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

/* ===== the statement op, shared with mysql.transaction ===== */

enum { S_WAITING, S_RUNNING, S_DONE };

static struct {
    sk_counter_t *ok, *error, *timeout, *unavailable;
    sk_histogram_t *latency;
} metrics;

static __thread sk_mysql_pool_t *thread_pool;

/* ===== the thread's pool, the metrics ===== */

sk_mysql_pool_t *sk_mysql_stmt_check_pool(lua_State *L)
{
    if (thread_pool == NULL)
        luaL_error(L, "mysql: no connection pool on this thread");
    return thread_pool;
}

sk_mysql_pool_t *sk_mysql_stmt_pool(void)
{
    return thread_pool;
}

void sk_mysql_stmt_set_pool(sk_mysql_pool_t *pool)
{
    thread_pool = pool;
}

void sk_mysql_stmt_init_metrics(void)
{
    static const char *results[] = {"ok", "error", "timeout", "unavailable"};
    sk_counter_t **counters[] = {&metrics.ok, &metrics.error, &metrics.timeout, &metrics.unavailable};
    for (size_t i = 0; i < 4; ++i) {
        char labels[64];
        snprintf(labels, sizeof(labels), "result=\"%s\"", results[i]);
        *counters[i] = sk_metrics_counter("seckilld_mysql_queries_total", "MySQL statements by result", labels);
    }
    metrics.latency = sk_metrics_histogram("seckilld_mysql_query_duration_seconds", "MySQL statement latency, pool wait included",
                                           "", sk_metrics_latency_bounds, sk_metrics_latency_nbounds);
}

/* ===== a statement ===== */

sk_mysql_stmt_t *sk_mysql_stmt_new(lua_State *L, int first, const sk_mysql_stmt_kind_t *kind, sk_co_t *co, sk_mysql_pool_t *pool)
{
    size_t bytes = sk_mysql_sql_check(L, first);
    sk_mysql_stmt_t *stmt = h2o_mem_alloc(sizeof(*stmt) + bytes);
    *stmt = (sk_mysql_stmt_t){.super = {.co = co}, .kind = kind, .pool = pool, .started_at = sk_now_ms()};
    sk_mysql_sql_copy(L, first, &stmt->sql, stmt + 1);
    return stmt;
}

void sk_mysql_stmt_free(sk_mysql_stmt_t *stmt)
{
    if (stmt->res != NULL)
        mysql_free_result(stmt->res);
    sk_mysql_sql_dispose(&stmt->sql);
    free(stmt);
}

static int push(lua_State *L, void *arg);

static void complete(sk_mysql_stmt_t *stmt)
{
    stmt->state = S_DONE;
    sk_histogram_observe(metrics.latency, (sk_now_ms() - stmt->started_at) / 1000.0);
    sk_counter_inc(stmt->super.err == NULL                   ? metrics.ok
                   : stmt->super.err == sk_mysql_err_timeout ? metrics.timeout
                   : stmt->super.err != sk_mysql_err_failed  ? metrics.unavailable
                                                             : metrics.error);
    sk_op_wake(&stmt->super, push);
}

/* records a failure: err is the completion's errstr, msg what Lua sees */
static void fail(sk_mysql_stmt_t *stmt, const char *err, const char *msg, unsigned errnum, const char *sqlstate)
{
    stmt->super.err = err;
    snprintf(stmt->errbuf, sizeof(stmt->errbuf), "%s", msg);
    stmt->errmsg = stmt->errbuf;
    stmt->errnum = errnum;
    snprintf(stmt->sqlstate, sizeof(stmt->sqlstate), "%s", sqlstate != NULL ? sqlstate : "");
}

/* the Lua message of a pool's errstr: "mysql unavailable" comes with the reason the last connect failed */
static const char *pool_message(sk_mysql_pool_t *pool, const char *err)
{
    return err == sk_mysql_err_unavailable ? sk_mysql_pool_last_error(pool) : err;
}

static void on_query_done(sk_op_t *op, sk_mysql_conn_t *conn, const char *err)
{
    sk_mysql_stmt_t *stmt = (sk_mysql_stmt_t *)op;
    if (err != NULL) {
        /* a timeout has no server error number: Lua gets nil, "timeout" */
        fail(stmt, err, conn->error.message, err == sk_mysql_err_timeout ? 0 : conn->error.errnum, conn->error.sqlstate);
    } else {
        stmt->res = sk_mysql_conn_take_result(conn);
        stmt->affected_rows = conn->affected_rows;
        stmt->insert_id = conn->insert_id;
    }
    if (stmt->kind != NULL && stmt->kind->on_done != NULL) {
        stmt->kind->on_done(stmt, conn, err);
    } else {
        sk_mysql_pool_release(stmt->pool, conn);
        stmt->conn = NULL;
    }
    complete(stmt);
}

static void send_stmt(sk_mysql_stmt_t *stmt, sk_mysql_conn_t *conn)
{
    stmt->state = S_RUNNING;
    stmt->conn = conn;
    sk_mysql_sql_render(&stmt->sql, conn);
    sk_mysql_conn_query(conn, &stmt->super, stmt->sql.text, stmt->sql.len, stmt->pool->target->query_timeout_ms, on_query_done);
}

static void on_acquired(sk_op_t *op, sk_mysql_conn_t *conn, const char *err)
{
    sk_mysql_stmt_t *stmt = (sk_mysql_stmt_t *)op;
    if (err != NULL) {
        fail(stmt, err, pool_message(stmt->pool, err), 0, NULL);
        complete(stmt);
        return;
    }
    send_stmt(stmt, conn);
}

/* the coroutine was abandoned (core/op.h): withdraw, hand back what the statement holds, free it */
static void on_cancel(void *arg)
{
    sk_mysql_stmt_t *stmt = arg;
    switch (stmt->state) {
    case S_WAITING:
        sk_mysql_pool_cancel(&stmt->waiter);
        break;
    case S_RUNNING:
        /* the statement cannot be taken back: the link goes, so nothing half-read ever reaches another lease */
        if (stmt->kind != NULL && stmt->kind->on_abandon != NULL)
            stmt->kind->on_abandon(stmt);
        sk_mysql_pool_discard(stmt->pool, stmt->conn);
        break;
    case S_DONE:
        if (stmt->conn != NULL)
            sk_mysql_pool_release(stmt->pool, stmt->conn); /* IN_TRANS: the pool rolls back */
        break;
    }
    sk_mysql_stmt_free(stmt);
}

int sk_mysql_stmt_push_result(lua_State *L, sk_mysql_stmt_t *stmt)
{
    if (stmt->res != NULL) {
        sk_mysql_sql_push_rows(L, stmt->res);
    } else {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, (lua_Integer)stmt->affected_rows);
        lua_setfield(L, -2, "affected_rows");
        lua_pushinteger(L, (lua_Integer)stmt->insert_id);
        lua_setfield(L, -2, "insert_id");
    }
    return 1;
}

/* the wake's push: `nil, err[, errno, sqlstate]`, or the kind's values; frees the statement */
static int push(lua_State *L, void *arg)
{
    sk_mysql_stmt_t *stmt = arg;
    int n;
    if (stmt->super.err != NULL) {
        lua_pushnil(L);
        lua_pushstring(L, stmt->errmsg);
        if (stmt->errnum != 0) {
            lua_pushinteger(L, stmt->errnum);
            lua_pushstring(L, stmt->sqlstate);
            n = 4;
        } else {
            n = 2;
        }
    } else if (stmt->kind != NULL && stmt->kind->push != NULL) {
        n = stmt->kind->push(L, stmt);
    } else {
        n = sk_mysql_stmt_push_result(L, stmt);
    }
    sk_mysql_stmt_free(stmt);
    return n;
}

/* ===== starting ===== */

int sk_mysql_stmt_lease(lua_State *L, sk_mysql_stmt_t *stmt)
{
    sk_mysql_conn_t *conn;
    const char *err;
    switch (sk_mysql_pool_acquire(stmt->pool, &stmt->waiter, &stmt->super, on_acquired, &conn, &err)) {
    case 1:
        send_stmt(stmt, conn);
        break;
    case 0:
        stmt->state = S_WAITING;
        break;
    default:
        /* known to be down: answer now, without parking */
        sk_counter_inc(metrics.unavailable);
        lua_pushnil(L);
        lua_pushstring(L, pool_message(stmt->pool, err));
        sk_mysql_stmt_free(stmt);
        return 2;
    }
    return sk_op_yield(L, &stmt->super, on_cancel);
}

int sk_mysql_stmt_send(lua_State *L, sk_mysql_stmt_t *stmt, sk_mysql_conn_t *conn)
{
    send_stmt(stmt, conn);
    return sk_op_yield(L, &stmt->super, on_cancel);
}

/* ===== mysql.query(sql, ...) ===== */

static int l_query(lua_State *L)
{
    sk_co_t *co = sk_co_check(L);
    sk_mysql_pool_t *pool = sk_mysql_stmt_check_pool(L);
    return sk_mysql_stmt_lease(L, sk_mysql_stmt_new(L, 1, NULL, co, pool));
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

    sk_mysql_stmt_init_metrics();
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
    sk_mysql_stmt_set_pool(
        sk_mysql_pool_new(loop, &mysql.target, mysql.pool_size, mysql.wait_timeout_ms, mysql.idle_timeout_ms, &pool_hooks));
}

static void thread_dispose_mysql(sk_loop_t *loop)
{
    (void)loop;
    sk_mysql_pool_t *pool = sk_mysql_stmt_pool();
    if (pool != NULL) {
        sk_mysql_pool_dispose(pool);
        sk_mysql_stmt_set_pool(NULL);
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
