/*
 * lease.h: the queue of lease requests that wait for an exclusive connection (pool.h's lease lane).
 *
 * A bounded FIFO: a request beyond `max` waiters is refused at once ("pool busy"); a request that waits `wait_ms`
 * leaves the queue and is told "pool timeout" from the loop's timer. The pool takes the oldest request when a
 * connection frees up (sk_redis_lease_shift) and completes it itself. One queue per pool, on its loop thread; no
 * locks, no Lua, no connection handling here.
 */
#ifndef SK_REDIS_LEASE_H
#define SK_REDIS_LEASE_H

#include "../../core/loop.h"
#include "conn.h"

typedef struct st_sk_redis_lease_t sk_redis_lease_t;
typedef struct st_sk_redis_lease_queue_t sk_redis_lease_queue_t;

/** completion of a queued lease, in core/op.h's shape: op is the one it was queued with; granted (conn) or given up
 * (conn == NULL, errstr says why: sk_redis_err_*, compared by pointer). Runs from the loop or from inside a hiredis
 * callback of another connection: it may send commands, never block. */
typedef void (*sk_redis_lease_cb)(sk_op_t *op, sk_redis_conn_t *conn, const char *errstr);

/** a lease request; embed it in the caller's op (zeroed: sk_redis_lease_cancel is then harmless) */
struct st_sk_redis_lease_t {
    sk_redis_lease_cb cb;
    /** the op cb completes */
    sk_op_t *op;
    /** when it was queued (sk_now_ms) */
    uint64_t queued_at;
    /* private */
    sk_redis_lease_queue_t *_queue;
    h2o_linklist_t _link;
    sk_timer_t _timer;
};

/** the waiters of one pool */
struct st_sk_redis_lease_queue_t {
    sk_loop_t *loop;
    /** waiters at most (redis.lease_queue) */
    size_t max;
    /** how long a waiter waits (redis.lease_wait_ms) */
    uint64_t wait_ms;
    /** waiters now */
    size_t count;
    /* private */
    h2o_linklist_t _waiters; /* oldest first */
};

/** prepares an empty queue on loop */
void sk_redis_lease_queue_init(sk_redis_lease_queue_t *queue, sk_loop_t *loop, size_t max, uint64_t wait_ms);
/** queues a request for op at the back. Returns NULL when queued (cb(op, ...) will be called exactly once: by
 * whoever shifts it, or with sk_redis_err_pool_timeout after wait_ms), or sk_redis_err_pool_busy when `max` requests
 * wait already (it is not queued; cb is never called). */
const char *sk_redis_lease_push(sk_redis_lease_queue_t *queue, sk_redis_lease_t *lease, sk_op_t *op, sk_redis_lease_cb cb);
/** removes the oldest request and stops its timer; NULL if none waits. Its cb is not called: the caller completes
 * it. */
sk_redis_lease_t *sk_redis_lease_shift(sk_redis_lease_queue_t *queue);
/** withdraws a queued request (its cb will not be called); harmless if it is not queued */
void sk_redis_lease_cancel(sk_redis_lease_t *lease);

/** true if no request waits */
static inline int sk_redis_lease_queue_is_empty(const sk_redis_lease_queue_t *queue)
{
    return queue->count == 0;
}

#endif
