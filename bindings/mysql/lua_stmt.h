/*
 * lua_stmt.h: one statement as Lua runs it (lua_stmt.c): lease a connection from the thread's pool (or use the one
 * a transaction holds), render, send, complete, wake the coroutine. The op of core/op.h for MySQL: mysql.query
 * (lua_module.c) and the transaction (lua_tx.c) both run their statements through it, and a statement kind lets
 * the transaction decide where the connection goes when a statement ends.
 */
#ifndef SK_MYSQL_LUA_STMT_H
#define SK_MYSQL_LUA_STMT_H

#include <lua.h>
#include "../../core/op.h"
#include "lua_sql.h"
#include "pool.h"

typedef struct st_sk_mysql_stmt_t sk_mysql_stmt_t;

/** what the owner of a kind of statement decides (static, one per kind: BEGIN, a statement of a transaction,
 * COMMIT/ROLLBACK); NULL members and a NULL kind mean a plain mysql.query */
typedef struct st_sk_mysql_stmt_kind_t {
    /** the statement ended on conn (err: the completion's errstr): give conn back with sk_mysql_pool_release and
     * clear stmt->conn, keep it in stmt->conn for push to hand over, or hand it to the owner and clear stmt->conn.
     * NULL: give it back. */
    void (*on_done)(sk_mysql_stmt_t *stmt, sk_mysql_conn_t *conn, const char *err);
    /** pushes the Lua values of a success and returns how many; NULL: sk_mysql_stmt_push_result */
    int (*push)(lua_State *L, sk_mysql_stmt_t *stmt);
    /** the coroutine was abandoned while the statement ran: its connection is about to be discarded */
    void (*on_abandon)(sk_mysql_stmt_t *stmt);
} sk_mysql_stmt_kind_t;

/** one statement: its op, its SQL (copied into the same allocation), then its outcome. Freed by its push. */
struct st_sk_mysql_stmt_t {
    sk_op_t super;
    const sk_mysql_stmt_kind_t *kind;
    /** the owner's (a transaction) */
    void *data;
    sk_mysql_pool_t *pool;
    sk_mysql_waiter_t waiter;
    /** the connection it runs on; after it ended, set only while the statement still holds it (see on_done) */
    sk_mysql_conn_t *conn;
    int state; /* queued for a connection, sent, or ended (its coroutine woken) */
    uint64_t started_at;
    sk_mysql_sql_t sql;
    /* the outcome */
    MYSQL_RES *res;
    uint64_t affected_rows, insert_id;
    const char *errmsg; /* what Lua sees when super.err is set */
    unsigned errnum;    /* the server's or the library's error number; 0 for a timeout or no connection */
    char sqlstate[6];
    char errbuf[256];
};

/** copies the statement at index `first` and its `?` values out of L into a new statement for co on pool. Misuse
 * raises (see sk_mysql_sql_check). */
sk_mysql_stmt_t *sk_mysql_stmt_new(lua_State *L, int first, const sk_mysql_stmt_kind_t *kind, sk_co_t *co, sk_mysql_pool_t *pool);
/** frees a statement that was never started (or from its push) */
void sk_mysql_stmt_free(sk_mysql_stmt_t *stmt);
/** leases a connection from stmt->pool, sends the statement on it and yields; answers `nil, err` at once (freeing
 * stmt) when MySQL is known to be down or the pool is shutting down */
int sk_mysql_stmt_lease(lua_State *L, sk_mysql_stmt_t *stmt);
/** sends the statement on conn, which the caller holds (a transaction's), and yields */
int sk_mysql_stmt_send(lua_State *L, sk_mysql_stmt_t *stmt, sk_mysql_conn_t *conn);
/** pushes the outcome of a successful plain statement: its rows, or {affected_rows, insert_id}; returns 1 */
int sk_mysql_stmt_push_result(lua_State *L, sk_mysql_stmt_t *stmt);

/** the pool this thread's statements lease from, or raises "mysql: no connection pool on this thread" */
sk_mysql_pool_t *sk_mysql_stmt_check_pool(lua_State *L);
/** the pool this thread's statements lease from (NULL if none) */
sk_mysql_pool_t *sk_mysql_stmt_pool(void);
/** sets it (the binding's thread_init; NULL at thread_dispose) */
void sk_mysql_stmt_set_pool(sk_mysql_pool_t *pool);
/** registers the statement metrics (seckilld_mysql_queries_total, seckilld_mysql_query_duration_seconds); once, at
 * start-up */
void sk_mysql_stmt_init_metrics(void);

#endif
