/*
 * conn.h: one MariaDB connection driven by a worker's event loop (no Lua knowledge).
 *
 * MariaDB Connector/C's non-blocking API (mysql_*_start / mysql_*_cont) runs each operation in a small library
 * coroutine that stops whenever the socket would block and tells us what to wait for (read, write, a timeout).
 * This file turns those wait masks into h2o socket readiness and loop timers, and chains the steps of a query
 * (real_query, store_result, draining further result sets) into one asynchronous operation.
 *
 * The h2o socket is created on a dup() of the library's fd with H2O_SOCKET_FLAG_DONT_READ: h2o only reports
 * readiness and never reads, and closing the h2o socket closes the dup, never the library's fd. It is always
 * detached before mysql_close so h2o never polls a descriptor number the library has released.
 */
#ifndef SK_MYSQL_CONN_H
#define SK_MYSQL_CONN_H

#include <stdint.h>
#include <mysql.h>
#include "../../core/loop.h"
#include "../../core/op.h"

/** where and how to connect; built once at start-up, read-only afterwards, shared by every thread */
typedef struct st_sk_mysql_target_t {
    char *host; /* numeric address (resolved at start-up: the library's own lookup would block the loop) */
    unsigned port;
    char *user;
    char *password;
    char *db;
    uint64_t connect_timeout_ms;
    uint64_t query_timeout_ms;
} sk_mysql_target_t;

typedef struct st_sk_mysql_conn_t sk_mysql_conn_t;

/** completion of an operation (the shape of core/op.h): op is the one given to the start (NULL when the owner
 * started it for itself), conn holds the outcome (its result, affected rows, insert id and error details), err is
 * NULL on success, else sk_mysql_err_timeout or sk_mysql_err_failed. Called from the loop, never from inside the
 * call that began the operation. */
typedef void (*sk_mysql_conn_cb)(sk_op_t *op, sk_mysql_conn_t *conn, const char *err);

/** the operation ran past its deadline; the connection was closed to abort it ("timeout", also conn->error.message) */
extern const char sk_mysql_err_timeout[];
/** the server or the client library reported an error: conn->error holds its number, SQLSTATE and message */
extern const char sk_mysql_err_failed[];
/** given to the sk_mysql_conn_watch_idle callback: the idle connection's socket became readable */
extern const char sk_mysql_err_idle_event[];

struct st_sk_mysql_conn_t {
    MYSQL *mysql;
    sk_loop_t *loop;
    const sk_mysql_target_t *target;
    /** set once connected; cleared when closed (by sk_mysql_conn_close, a timeout or a lost connection) */
    int connected;
    /** the last error: errnum is the server's or the client library's code (0 for our own timeout) */
    struct {
        unsigned errnum;
        char sqlstate[6];
        char message[256];
    } error;
    /** the outcome of the last query: a buffered result (owned by the caller after sk_mysql_conn_take_result) or,
     * for statements without a result set, the affected rows and insert id */
    MYSQL_RES *result;
    uint64_t affected_rows;
    uint64_t insert_id;
    /** for the owner (the pool): user data, list links and an idle timer */
    void *data;
    h2o_linklist_t link;
    h2o_linklist_t all_link;
    sk_timer_t idle_timer;
    uint64_t idle_since;
    /* private */
    h2o_socket_t *_sock;
    int _phase;
    int _continuing;
    int _waiting;
    int _in_start;
    sk_timer_t _wait_timer;
    sk_timer_t _deadline;
    sk_deferred_t _deferred;
    sk_op_t *_op;
    sk_mysql_conn_cb _cb;
    sk_mysql_conn_cb _on_idle_event;
    const char *_sql;
    size_t _sql_len;
    const char *_done_err;
    MYSQL *_ret_mysql;
    int _ret_int;
    MYSQL_RES *_ret_res;
};

/** allocates a disconnected connection bound to loop; returns NULL if the library is out of memory */
sk_mysql_conn_t *sk_mysql_conn_new(sk_loop_t *loop, const sk_mysql_target_t *target);
/** closes (if needed) and frees the connection; any operation in flight is abandoned and its callback never runs */
void sk_mysql_conn_free(sk_mysql_conn_t *conn);

/* The three starts below follow core/op.h's shape and cannot fail at once: each returns NULL always, and cb(op, conn,
 * err) runs exactly once, later, from the loop; every failure (even an out-of-memory before anything is sent) is
 * reported through cb. */

/** connects (handshake, auth, utf8mb4, database) within target->connect_timeout_ms; returns NULL */
const char *sk_mysql_conn_connect(sk_mysql_conn_t *conn, sk_op_t *op, sk_mysql_conn_cb cb);
/** sends one statement and buffers its whole result; further result sets (stored procedures) are drained and
 * dropped. timeout_ms 0 means no deadline. The sql buffer must stay valid until cb runs. Returns NULL. */
const char *sk_mysql_conn_query(sk_mysql_conn_t *conn, sk_op_t *op, const char *sql, size_t len, uint64_t timeout_ms,
                                sk_mysql_conn_cb cb);
/** resets the session (rolls back, drops temporary tables and user variables, restores autocommit); returns NULL */
const char *sk_mysql_conn_reset(sk_mysql_conn_t *conn, sk_op_t *op, uint64_t timeout_ms, sk_mysql_conn_cb cb);
/** takes ownership of the buffered result of the last query (NULL for statements without a result set) */
MYSQL_RES *sk_mysql_conn_take_result(sk_mysql_conn_t *conn);

/** true while an operation is in flight */
int sk_mysql_conn_is_busy(const sk_mysql_conn_t *conn);
/** the server status flags of the last reply (SERVER_STATUS_IN_TRANS, SERVER_STATUS_AUTOCOMMIT, ...) */
unsigned sk_mysql_conn_server_status(sk_mysql_conn_t *conn);
/** escapes src for use inside '...' on this connection (its character set and NO_BACKSLASH_ESCAPES mode); dst must
 * hold 2 * len + 1 bytes. Returns the escaped length. */
size_t sk_mysql_conn_escape(sk_mysql_conn_t *conn, char *dst, const char *src, size_t len);

/** while the connection sits idle, calls cb(NULL, conn, sk_mysql_err_idle_event) on any readiness of its socket (the
 * server closed it, or sent something unexpected): either way the connection must not be reused. NULL stops
 * watching. */
void sk_mysql_conn_watch_idle(sk_mysql_conn_t *conn, sk_mysql_conn_cb cb);

/** closes the connection now, aborting any operation in flight (its callback never runs). The conn can be connected
 * again or freed. */
void sk_mysql_conn_close(sk_mysql_conn_t *conn);

#endif
