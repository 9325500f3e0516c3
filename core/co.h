/*
 * co.h: a Lua coroutine per request (or per consumer batch), and the one way a binding yields.
 *
 * The shape every binding follows (sleep in bindings/base/lua_core.c is the smallest example):
 *
 *     static int l_op(lua_State *L) {
 *         sk_co_t *co = sk_co_check(L);            // raises if I/O is not allowed here
 *         my_op_t *op = ...; op->super.co = co;    // an sk_op_t first (op.h)
 *         start the I/O with on_done as completion;
 *         return sk_op_yield(L, &op->super, cancel_op); // parks the coroutine (sk_co_yield underneath)
 *     }
 *     static void on_done(...) {                   // called by the library, maybe deep in its stack
 *         stash the result in op (convert library-owned memory now: it dies after this callback);
 *         sk_op_wake(&op->super, push_results);    // resumes later, from the loop (sk_co_wake underneath)
 *     }
 *     static int push_results(lua_State *L, void *arg) { push values; free op; return nvalues; }
 *
 * Completions never resume Lua inside a library callback (that would re-enter hiredis/MariaDB). The op around
 * this (its start, its completion cb(op, result, errstr), its cancel) has one shape for every binding: op.h.
 */
#ifndef SK_CO_H
#define SK_CO_H

#include <lua.h>
#include "loop.h"

typedef struct st_sk_vm_t sk_vm_t;
typedef struct st_sk_co_t sk_co_t;

/** the longest request id a coroutine carries (request.h: SK_REQUEST_ID_MAX) */
#define SK_CO_REQUEST_ID_MAX 64

/** the most note keys an application declares (app.access_log_fields), and the longest value kept of each */
#define SK_CO_MAX_NOTES 4
#define SK_CO_NOTE_MAX 64

/** what a request tells the access log: the value of each of its VM's note keys (vm->note_keys, in that order), from a
 * route parameter of that name or req:annotate; "" when not told */
typedef struct st_sk_co_notes_t {
    /** the keys (the request's VM's, which outlives its coroutine) */
    char *const *keys;
    size_t nkeys;
    char values[SK_CO_MAX_NOTES][SK_CO_NOTE_MAX + 1];
} sk_co_notes_t;

/** sets the note `key` (key_len bytes) to value (cut at SK_CO_NOTE_MAX bytes); a key the VM did not declare is ignored */
void sk_co_note(sk_co_notes_t *notes, const char *key, size_t key_len, const char *value, size_t value_len);

/** pushes the values the yielding binding returns to Lua; returns how many. Runs on the coroutine's stack. */
typedef int (*sk_co_push_cb)(lua_State *L, void *arg);
/** called once when the coroutine ends. ok: results are the top nres values of co->L; !ok: the error message with
 * a traceback is the top value. A coroutine abandoned at shutdown (sk_co_abandon_all) ends here too, with !ok and
 * co->abandoned set. The coroutine is released right after this returns. */
typedef void (*sk_co_done_cb)(sk_co_t *co, int ok, int nres);
/** called if the coroutine is abandoned while parked and not yet woken (shutdown); the binding frees its op without
 * resuming, and must hand back what it holds (a pooled connection, a queue slot) while the pools still live */
typedef void (*sk_co_cancel_cb)(void *op);

struct st_sk_co_t {
    sk_vm_t *vm;
    /** the coroutine's own Lua thread */
    lua_State *L;
    sk_loop_t *loop;
    sk_co_done_cb on_done;
    void *data;
    /** set when the coroutine is abandoned at shutdown instead of ending (see sk_co_abandon_all) */
    int abandoned;
    /** the id of the request this coroutine serves (or the one that spawned it), "" if none: every line logged while
     * it runs carries it (the runner makes it the thread's current request id around each resume) */
    char request_id[SK_CO_REQUEST_ID_MAX + 1];
    /** where req:annotate writes what the access log shows of the request (an HTTP handler's), or NULL */
    sk_co_notes_t *notes;
    /* private */
    int _ref;
    int _parked;
    sk_co_push_cb _push;
    void *_push_arg;
    sk_co_cancel_cb _cancel;
    void *_cancel_arg;
    sk_deferred_t _resume;
    h2o_linklist_t _live; /* in the calling thread's list of live coroutines */
};

/** creates a coroutine on vm (which it keeps alive until the coroutine ends). Push the function and its arguments
 * onto co->L, then call sk_co_start. */
sk_co_t *sk_co_new(sk_vm_t *vm, sk_loop_t *loop);
/** runs the coroutine until it first parks or ends. on_done may be called before this returns. */
void sk_co_start(sk_co_t *co, int nargs, sk_co_done_cb on_done, void *data);
/** like sk_co_start, but the coroutine first runs from the loop, after the current iteration: never inside the
 * caller (spawn uses it from a running coroutine). */
void sk_co_start_later(sk_co_t *co, int nargs, sk_co_done_cb on_done, void *data);

/** the request coroutine running L, or raises a Lua error ("cannot yield here: ...") if L is not one, or if it
 * cannot yield at this point (inside a metamethod, table.sort, a coroutine.wrap, a module's top level). */
sk_co_t *sk_co_check(lua_State *L);
/** the coroutine running L, or NULL: for bindings that work with or without one */
sk_co_t *sk_co_of(lua_State *L);
/** parks the coroutine; must be the binding's `return`. cancel (may be NULL) is called if it is abandoned. */
int sk_co_yield(lua_State *L, sk_co_t *co, sk_co_cancel_cb cancel, void *op);
/** schedules a parked coroutine to resume on its loop; push supplies the binding's return values at that time.
 * Safe to call from library callbacks on the coroutine's own loop thread, and only there. */
void sk_co_wake(sk_co_t *co, sk_co_push_cb push, void *arg);

/** number of coroutines alive on the calling thread (for draining and metrics) */
size_t sk_co_alive(void);

/** ends every coroutine still alive on the calling thread without resuming it (a drain that timed out): a parked
 * one has its binding's cancel called, one already woken has its results pushed and dropped (the push callback owns
 * the op), then each gets on_done(co, 0, 1) with co->abandoned set and is released. Call it from the loop, before
 * the thread's bindings dispose their pools, so that what the coroutines held goes back into live pools.
 * Returns how many were abandoned. */
size_t sk_co_abandon_all(void);

#endif
