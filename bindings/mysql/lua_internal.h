/*
 * mysql_lua_internal.h: what mysql_lua.c (the `mysql` module, mysql.query and the life cycle), mysql_sql.c (Lua
 * values into SQL, results into Lua values) and mysql_tx.c (mysql.transaction) share: the statement op and the
 * transaction lease. Private to those three files.
 */
#ifndef SK_MYSQL_LUA_INTERNAL_H
#define SK_MYSQL_LUA_INTERNAL_H

#include <lua.h>
#include "../../core/op.h"
#include "pool.h"

/** what a statement op is: a plain mysql.query, or one step of a transaction */
enum { SK_MYSQL_Q_PLAIN, SK_MYSQL_Q_BEGIN, SK_MYSQL_Q_TX, SK_MYSQL_Q_COMMIT, SK_MYSQL_Q_ROLLBACK };
/** where a statement op is: queued for a connection, sent, or completed (its coroutine woken) */
enum { SK_MYSQL_S_WAITING, SK_MYSQL_S_RUNNING, SK_MYSQL_S_DONE };

typedef struct st_sk_mysql_tx_t sk_mysql_tx_t;

/** one statement: its template and values (copied into the op's own allocation), then its outcome. Freed with
 * sk_mysql_op_free. */
typedef struct st_sk_mysql_op_t {
    sk_op_t super; /* its coroutine, and the errstr of the completion (core/op.h) */
    sk_mysql_pool_t *pool;
    sk_mysql_waiter_t waiter;
    sk_mysql_conn_t *conn;
    sk_mysql_tx_t *tx; /* Q_TX, Q_COMMIT, Q_ROLLBACK: the lease the connection belongs to */
    int kind;
    int state;
    uint64_t started_at;
    const char *tmpl; /* copied into the same allocation, as are the params' strings */
    size_t tmpl_len;
    size_t nparams;
    struct st_sk_mysql_param_t *params; /* defined in mysql_sql.c */
    char *sql;                          /* the rendered statement, once a connection is leased */
    size_t sql_len;
    /* the outcome */
    MYSQL_RES *res;
    uint64_t affected_rows, insert_id;
    const char *errmsg; /* what Lua sees when super.err is set */
    unsigned errnum;
    char sqlstate[6];
    char errbuf[256];
} sk_mysql_op_t;

/** a transaction's lease: the userdata `tx` passed to the function given to mysql.transaction */
struct st_sk_mysql_tx_t {
    sk_mysql_conn_t *conn; /* NULL once finished (or abandoned) */
    sk_mysql_pool_t *pool;
    int busy;
    const char *outcome; /* NULL while open, then "committed" or "rolled back" */
};

/* ===== mysql_sql.c ===== */

/** builds an op of `kind` from the Lua arguments: the statement at index `first` and its `?` values after it. Misuse
 * raises: a count of values that does not match the placeholders, or a value that has no SQL form. */
sk_mysql_op_t *sk_mysql_op_new(lua_State *L, int first, int kind);
/** renders op->sql from the template and values, escaping with `conn` (its character set and SQL mode) */
void sk_mysql_op_render(sk_mysql_op_t *op, sk_mysql_conn_t *conn);
/** pushes a result set as an array of rows, each a table keyed by column name */
void sk_mysql_lua_push_rows(lua_State *L, MYSQL_RES *res);

/* ===== mysql_lua.c ===== */

/** the calling thread's pool, or raises "mysql: no connection pool on this thread" */
sk_mysql_pool_t *sk_mysql_lua_check_pool(lua_State *L);
/** frees an op with its result and rendered statement */
void sk_mysql_op_free(sk_mysql_op_t *op);
/** sends op on conn (leased for it); completion wakes op->super.co with the op's Lua results */
void sk_mysql_op_run(sk_mysql_op_t *op, sk_mysql_conn_t *conn);
/** the sk_co_yield cancel callback of an op: its coroutine was abandoned; frees the op */
void sk_mysql_op_cancel(void *arg);
/** leases a connection from op->pool for op and yields; answers `nil, err` at once (freeing op) if MySQL is known to
 * be down */
int sk_mysql_op_start_leased(lua_State *L, sk_mysql_op_t *op);

/* ===== mysql_tx.c ===== */

/** pushes the `tx` userdata for a completed BEGIN op, which hands its connection over (op->conn becomes NULL) */
int sk_mysql_tx_push(lua_State *L, sk_mysql_op_t *op);
/** registers the tx metatable and sets `transaction` in the module table on top of L */
void sk_mysql_tx_open(lua_State *L);

#endif
