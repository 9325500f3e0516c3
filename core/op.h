/*
 * op.h: the one shape of an asynchronous operation, followed by every binding that yields (h2o's shape).
 *
 * An op is the state of one call that waits: a struct the binding allocates per call, with an sk_op_t as its
 * first member (conventionally `super`) and the timer, queue link and library handles it needs embedded in it,
 * so nothing else is allocated while it waits.
 *
 *   start     const char *sk_<family>_<object>_<verb>(object, op, args..., cb[, out...])
 *             The object the verb acts on (a connection, a pool) comes first, as in h2o; then the op, then the
 *             arguments, then the completion, then any out-fields. Every start returns the same way:
 *               NULL      started: cb(op, ...) runs exactly once, later, on the op's loop (never before start
 *                         returns);
 *               an error  one of the family's exported constants (`sk_<family>_err_*`, compared by pointer): it
 *                         failed at once, nothing is pending, cb never runs.
 *             A start that cannot fail at once (MySQL's) returns NULL always, so every call site reads the same:
 *             `if ((err = sk_x_y(...)) != NULL) { handle it now }`. What a caller needs beyond the constant (the
 *             librdkafka code behind it) travels in an out-field the header documents, never in a second return
 *             convention. A start that can be satisfied at once (a free gate slot, an idle pooled connection, a
 *             lane nobody leads) also returns NULL, says so in an out-field its header documents (the connection,
 *             the lane to lead, sk_redis_gate_is_held) and then never calls cb: that fast path is the only NULL
 *             after which cb does not run, and only where the header names it.
 *
 *   complete  void cb(sk_op_t *op, RESULT result, const char *errstr)
 *             Exactly once per started op, unless the op was withdrawn (see cancel below), on the op's own loop
 *             thread, possibly deep inside a library's call stack: it must not resume Lua. RESULT is the family's
 *             (the connection whose rows, error number and message are read now; a reply; a delivery report);
 *             memory the library owns dies when cb returns, so cb converts what it needs into the op. errstr is
 *             NULL on success, else one of the family's exported constants, `const char sk_<family>_err_<what>[]`,
 *             compared by pointer (h2o's h2o_socket_error_closed); details (a server's message, an errno) travel
 *             in RESULT. cb stores the outcome in the op (op->err = errstr) and wakes the coroutine: sk_op_wake.
 *
 *   Lua side  static int l_call(lua_State *L) {
 *                 my_op_t *op = ...; op->super.co = sk_co_check(L);
 *                 const char *err;
 *                 if ((err = sk_family_object_verb(object, &op->super, ..., on_done)) != NULL) {
 *                     free(op); lua_pushnil(L); lua_pushstring(L, err); return 2;  // failed at once
 *                 }
 *                 return sk_op_yield(L, &op->super, on_cancel);      // parks the coroutine on the op
 *             }
 *             static int push(lua_State *L, void *op) { push the values (the strings Lua sees are stable);
 *                                                       free the op; return how many; }
 *
 *   abandon   A drain that times out calls sk_co_abandon_all (core/co.h), which ends every coroutine left
 *             without resuming it. For a coroutine parked on an op and not yet woken, it calls the cancel given
 *             to sk_op_yield: cancel withdraws whatever is still pending (a queued wait, a statement in flight)
 *             so that the completion never runs afterwards, hands back what the op holds (a leased connection, a
 *             queue slot) while the pools still live, and frees the op. For one already woken, it runs push and
 *             drops the values: push owns the op from the wake on, and frees it either way.
 *
 * Machinery that starts an operation for itself (a pool connecting or cleaning a connection) passes op = NULL
 * and finds its own state through the RESULT.
 */
#ifndef SK_OP_H
#define SK_OP_H

#include "co.h"

/** the part of an op every family shares; embed it first in the family's op struct */
typedef struct st_sk_op_t {
    /** the coroutine parked on the op (NULL for an op that no coroutine waits on) */
    sk_co_t *co;
    /** the outcome as the completion reported it: NULL, or the family's exported error constant */
    const char *err;
} sk_op_t;

/** parks op->co on op; must be the binding's `return`. cancel(op) runs instead of the completion if the coroutine
 * is abandoned while parked (see above). */
static inline int sk_op_yield(lua_State *L, sk_op_t *op, sk_co_cancel_cb cancel)
{
    return sk_co_yield(L, op->co, cancel, op);
}

/** from the completion: resumes op->co later, from the loop, with the values push(L, op) returns */
static inline void sk_op_wake(sk_op_t *op, sk_co_push_cb push)
{
    sk_co_wake(op->co, push, op);
}

#endif
