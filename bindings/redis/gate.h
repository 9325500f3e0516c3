/*
 * gate.h: a FIFO gate per key and loop thread: at most `width` entries of this thread hold a key's gate at once, the
 * others queue, oldest first, holding nothing.
 *
 * redis.optimistic uses it on a hot key (optimistic.c): without it, every coroutine of a thread that WATCHes the key
 * races the others and only one EXEC per round wins; with it, a thread runs at most `width` transactions per key,
 * so conflicts can only come from other threads. A freed slot passes to the next waiter at once, but the waiter is
 * told from the loop (a deferred callback), never inside the call that freed the slot: a transaction that ends inside
 * a hiredis callback must not start the next one there.
 *
 * The map key -> gate is per thread (no locks); a gate exists while it has holders or waiters and is freed as soon
 * as it has neither. No Lua, no Redis here: any string can be a key.
 */
#ifndef SK_REDIS_GATE_H
#define SK_REDIS_GATE_H

#include "../../core/loop.h"
#include "../../core/op.h"

typedef struct st_sk_redis_gate_t sk_redis_gate_t;
typedef struct st_sk_redis_gate_entry_t sk_redis_gate_entry_t;

/** tells a queued entry how its wait ended, from the loop, in core/op.h's shape: op is the one it entered with;
 * errstr NULL: entry holds a slot now; sk_redis_err_busy: it waited wait_ms and has left the queue (it holds
 * nothing) */
typedef void (*sk_redis_gate_cb)(sk_op_t *op, sk_redis_gate_entry_t *entry, const char *errstr);

/** the limits an entry enters with */
typedef struct st_sk_redis_gate_limits_t {
    /** holders at most (an entry waits while `width` or more hold the gate, or while others wait before it) */
    unsigned width;
    /** waiters at most; beyond, entering is refused at once */
    size_t queue;
    /** how long an entry waits before it is refused */
    uint64_t wait_ms;
} sk_redis_gate_limits_t;

/** one holder or waiter; embed it in the caller's op, zeroed (sk_redis_gate_leave is then harmless) */
struct st_sk_redis_gate_entry_t {
    sk_redis_gate_cb cb;
    /** the op cb completes */
    sk_op_t *op;
    /* private */
    sk_loop_t *_loop;
    sk_redis_gate_t *_gate; /* NULL while the entry holds nothing and waits for nothing */
    int _held;
    unsigned _width;
    uint64_t _queued_at;
    h2o_linklist_t _link; /* in the gate's waiters while waiting */
    sk_timer_t _timer;
    sk_deferred_t _granted;
};

/** enters the gate of key (len bytes, copied) on the calling thread (whose loop is `loop`) for op, in core/op.h's
 * shape. Returns NULL when it entered or queued, and sk_redis_gate_is_held(entry) tells which:
 *   held      it holds a slot now (the fast path: cb is not called);
 *   not held  it was queued: cb(op, entry, errstr) follows exactly once from the loop, granted (errstr NULL) or
 *             sk_redis_err_busy after limits->wait_ms.
 * Returns sk_redis_err_busy when limits->queue entries wait already: refused at once, the entry holds nothing and cb
 * is never called. Counts seckilld_redis_gate_{waits,timeouts,rejected}_total and the wait histogram. */
const char *sk_redis_gate_enter(sk_loop_t *loop, sk_redis_gate_entry_t *entry, sk_op_t *op, const char *key, size_t len,
                                const sk_redis_gate_limits_t *limits, sk_redis_gate_cb cb);
/** leaves the gate, holding a slot or waiting (cb will not be called any more); harmless if the entry holds nothing.
 * A freed slot goes to the oldest waiter, which is told from the loop. */
void sk_redis_gate_leave(sk_redis_gate_entry_t *entry);
/** true while the entry holds a slot (granted, maybe not yet told); right after sk_redis_gate_enter returned NULL,
 * whether it entered at once */
static inline int sk_redis_gate_is_held(const sk_redis_gate_entry_t *entry)
{
    return entry->_gate != NULL && entry->_held;
}
/** the gates alive on the calling thread (for tests: 0 once no key has holders or waiters) */
size_t sk_redis_gate_count(void);

#endif
