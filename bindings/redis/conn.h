/*
 * conn.h: one hiredis 0.14 async connection driven by a worker's loop.
 *
 * hiredis 0.14 has no adapter for h2o and no timeouts, so this file supplies both: the fd hiredis connects is
 * registered with the evloop as a readiness-only socket (H2O_SOCKET_FLAG_DONT_READ; hiredis reads and writes the
 * fd itself), and connect/command deadlines are sk_timers. Replies are ordered, so a command cannot be cancelled:
 * a timed-out command drops the whole connection and every pending command fails with the timeout error.
 *
 * Lifetime rules that keep hiredis's own stack safe:
 *   - the redisAsyncContext is never freed from inside a hiredis call path (reply callbacks, onConnect, the event
 *     hooks); such closes are deferred to the loop;
 *   - on_close is always delivered from the loop (never inside hiredis), after every pending command has been
 *     failed, so the owner may reconnect or free the connection there.
 * No Lua knowledge here.
 */
#ifndef SK_REDIS_CONN_H
#define SK_REDIS_CONN_H

#include "../../core/loop.h"
#include "../../core/op.h"
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include "err.h"

typedef struct st_sk_redis_conn_t sk_redis_conn_t;

/** completion of one command, in core/op.h's shape: op is the one the command was sent with (NULL for the pool's
 * own commands that need no state). reply is owned by hiredis and valid only during the call (copy what you keep);
 * reply == NULL means the command failed and errstr (one of sk_redis_err_*, err.h, compared by pointer) says why. */
typedef void (*sk_redis_reply_cb)(sk_op_t *op, redisReply *reply, const char *errstr);

typedef enum {
    SK_REDIS_CONN_IDLE,       /* not connected; connect() may be called */
    SK_REDIS_CONN_CONNECTING, /* commands are accepted and buffered until the connect completes */
    SK_REDIS_CONN_CONNECTED,
    SK_REDIS_CONN_CLOSING /* dropped; on_close is on its way, commands are refused */
} sk_redis_conn_state_t;

/** counters a connection bumps (optional; the pool points every connection at its metrics) */
typedef struct st_sk_redis_conn_stats_t {
    struct st_sk_counter_t *ok, *error_reply, *failed;
} sk_redis_conn_stats_t;

struct st_sk_redis_conn_t {
    sk_loop_t *loop;
    sk_redis_conn_state_t state;
    uint64_t connect_timeout_ms, command_timeout_ms;
    /** called (inside hiredis, do not close from here synchronously: close() defers by itself) when connected */
    void (*on_connect)(sk_redis_conn_t *conn);
    /** called from the loop once the connection is gone; errstr says why. The owner may reconnect or free. */
    void (*on_close)(sk_redis_conn_t *conn, const char *errstr);
    void *data;
    const sk_redis_conn_stats_t *stats;
    /** commands sent and not yet answered */
    size_t pending;
    /** hiredis's description of the last connection failure (for logs) */
    char last_error[128];
    /* private */
    redisAsyncContext *_ac;
    h2o_socket_t *_sock;
    const char *_errstr;
    unsigned _in_hiredis;
    int _connected_once;
    sk_timer_t _connect_timer, _command_timer;
    sk_deferred_t _close_deferred;
    h2o_linklist_t _cmds; /* pending commands, oldest first (replies are ordered) */
};

/** prepares an idle connection object; it does not connect */
void sk_redis_conn_init(sk_redis_conn_t *conn, sk_loop_t *loop, uint64_t connect_timeout_ms, uint64_t command_timeout_ms);
/** starts a non-blocking connect to a numeric address. Returns 0, or -1 if it failed at once (then on_close is
 * still delivered from the loop, so the owner has a single failure path). */
int sk_redis_conn_connect(sk_redis_conn_t *conn, const char *ip, int port);
/** sends a command for op (buffered while connecting), in core/op.h's shape. Returns NULL when sent: cb(op, reply,
 * errstr) is called exactly once, possibly with reply == NULL; or sk_redis_err_closed when the connection cannot take
 * commands (not connected, closing, or hiredis refused it): nothing was sent and cb is never called. */
const char *sk_redis_conn_command(sk_redis_conn_t *conn, sk_op_t *op, int argc, const char **argv, const size_t *lens,
                                  sk_redis_reply_cb cb);
/** same with a printf-like format (hiredis's %s / %b syntax) */
const char *sk_redis_conn_commandf(sk_redis_conn_t *conn, sk_op_t *op, sk_redis_reply_cb cb, const char *fmt, ...);
/** drops the connection: every pending command fails with errstr, then on_close(errstr) runs from the loop.
 * Harmless when already idle or closing. */
void sk_redis_conn_close(sk_redis_conn_t *conn, const char *errstr);
/** releases what the object holds; the connection must be idle (on_close delivered) or is closed silently first.
 * Call only from the loop, never inside a hiredis callback. */
void sk_redis_conn_dispose(sk_redis_conn_t *conn);

/** true if commands may be sent now */
static inline int sk_redis_conn_is_usable(const sk_redis_conn_t *conn)
{
    return conn->state == SK_REDIS_CONN_CONNECTING || conn->state == SK_REDIS_CONN_CONNECTED;
}

#endif
