/*
 * pool.h: a per-thread pool of MariaDB connections (no Lua knowledge).
 *
 * At most `size` connections per loop thread, opened on demand; callers beyond that wait in a FIFO queue for at
 * most wait_timeout_ms. A connection comes back through sk_mysql_pool_release, which never hands it on dirty:
 * an operation in flight or a lost link closes it, an open transaction is rolled back, a session left in
 * autocommit=0 is reset, and only then does it serve the next waiter or go idle. Idle connections close after
 * idle_timeout_ms, or at once if their socket becomes readable (the server went away).
 *
 * When connecting fails and no connection is left, every waiter fails at once with the reason and new requests
 * fail fast until a background reconnect (exponential backoff, 100 ms .. 2 s) succeeds.
 */
#ifndef SK_MYSQL_POOL_H
#define SK_MYSQL_POOL_H

#include "conn.h"

typedef struct st_sk_mysql_pool_t sk_mysql_pool_t;
typedef struct st_sk_mysql_waiter_t sk_mysql_waiter_t;

/** the completion of a queued acquire (the shape of core/op.h): the connection, or NULL and err, one of
 * sk_mysql_err_pool_timeout, sk_mysql_err_unavailable, sk_mysql_err_shutting_down */
typedef void (*sk_mysql_acquire_cb)(sk_op_t *op, sk_mysql_conn_t *conn, const char *err);

/** observers, called on the pool's thread (metrics and health live outside the pool) */
typedef struct st_sk_mysql_pool_hooks_t {
    void (*on_connect)(sk_mysql_pool_t *pool);
    void (*on_connect_error)(sk_mysql_pool_t *pool, const char *err);
    void (*on_wait)(sk_mysql_pool_t *pool);
    void (*on_wait_timeout)(sk_mysql_pool_t *pool);
    void (*on_open_delta)(sk_mysql_pool_t *pool, int delta);
} sk_mysql_pool_hooks_t;

/** a pending acquire; embed it in the operation that waits */
struct st_sk_mysql_waiter_t {
    h2o_linklist_t _link;
    sk_timer_t _timer;
    sk_mysql_acquire_cb _cb;
    sk_op_t *_op;
    sk_mysql_pool_t *_pool;
};

/** the pool wait ran past wait_timeout_ms ("pool wait timeout") */
extern const char sk_mysql_err_pool_timeout[];
/** connecting failed and no connection is left ("mysql unavailable"); sk_mysql_pool_last_error says why */
extern const char sk_mysql_err_unavailable[];
/** the pool is being disposed ("shutting down") */
extern const char sk_mysql_err_shutting_down[];

struct st_sk_mysql_pool_t {
    sk_loop_t *loop;
    const sk_mysql_target_t *target;
    const sk_mysql_pool_hooks_t *hooks;
    size_t size;
    uint64_t wait_timeout_ms;
    uint64_t idle_timeout_ms;
    /* private */
    size_t _open;         /* connections counted against size: connecting, leased, cleaning or idle */
    h2o_linklist_t _idle; /* most recently used first */
    h2o_linklist_t _all;
    h2o_linklist_t _waiters;
    uint64_t _backoff_ms;
    uint64_t _down_until; /* while now < this and nothing is open, acquire fails fast */
    sk_timer_t _retry;
    char _last_error[256];
    int _disposing;
};

/** creates a pool on loop and starts one connection so health is known early; nothing else connects until needed */
sk_mysql_pool_t *sk_mysql_pool_new(sk_loop_t *loop, const sk_mysql_target_t *target, size_t size, uint64_t wait_timeout_ms,
                                   uint64_t idle_timeout_ms, const sk_mysql_pool_hooks_t *hooks);
/** closes idle connections and fails waiters; leased connections close when released, and the pool is freed when
 * the last one is */
void sk_mysql_pool_dispose(sk_mysql_pool_t *pool);

/** asks for a connection for op, in core/op.h's shape. Returns NULL with *conn set when an idle connection is there
 * right now (the fast path: cb is not called); NULL with *conn NULL when waiter (embedded in op) was queued (cb(op,
 * conn, err) runs exactly once, later, never before this returns; sk_mysql_pool_cancel withdraws it); or the error,
 * *conn NULL and cb never called: sk_mysql_err_unavailable (MySQL is known to be down) or
 * sk_mysql_err_shutting_down. */
const char *sk_mysql_pool_acquire(sk_mysql_pool_t *pool, sk_mysql_waiter_t *waiter, sk_op_t *op, sk_mysql_acquire_cb cb,
                                  sk_mysql_conn_t **conn);
/** why the last connect failed, as Lua shows it: "mysql unavailable: <the library's message>" */
const char *sk_mysql_pool_last_error(const sk_mysql_pool_t *pool);
/** withdraws a queued waiter (its cb will not run) */
void sk_mysql_pool_cancel(sk_mysql_waiter_t *waiter);
/** gives a leased connection back; it is cleaned or closed as needed (see above) */
void sk_mysql_pool_release(sk_mysql_pool_t *pool, sk_mysql_conn_t *conn);
/** closes a leased connection (aborting any operation in flight) and frees its slot */
void sk_mysql_pool_discard(sk_mysql_pool_t *pool, sk_mysql_conn_t *conn);

#endif
