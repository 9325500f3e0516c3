/*
 * lua_stmt.c: one statement as Lua runs it, the op that mysql.query and mysql.transaction share: lease a
 * connection, render, send, complete, wake the coroutine. Where the connection goes when the statement ends is its
 * kind's decision (lua_tx.c); a plain statement gives it back.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include "../../core/metrics.h"
#include "lua_stmt.h"

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
    /* cannot fail at once (conn.h: returns NULL always): every failure comes to on_query_done */
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
    if ((err = sk_mysql_pool_acquire(stmt->pool, &stmt->waiter, &stmt->super, on_acquired, &conn)) != NULL) {
        /* known to be down: answer now, without parking */
        sk_counter_inc(metrics.unavailable);
        lua_pushnil(L);
        lua_pushstring(L, pool_message(stmt->pool, err));
        sk_mysql_stmt_free(stmt);
        return 2;
    }
    if (conn != NULL)
        send_stmt(stmt, conn); /* an idle connection at once: on_acquired will not run */
    else
        stmt->state = S_WAITING; /* queued: on_acquired follows */
    return sk_op_yield(L, &stmt->super, on_cancel);
}

int sk_mysql_stmt_send(lua_State *L, sk_mysql_stmt_t *stmt, sk_mysql_conn_t *conn)
{
    send_stmt(stmt, conn);
    return sk_op_yield(L, &stmt->super, on_cancel);
}
