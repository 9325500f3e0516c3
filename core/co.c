/*
 * co.c: running request handlers as Lua coroutines on the loop.
 *
 * A coroutine is anchored in the registry while it lives (a parked thread must not be collected), holds a
 * reference on its VM, and is resumed only from the loop (sk_loop_defer), never from inside a library callback.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include "co.h"
#include "log.h"
#include "vm.h"

static __thread size_t alive;
static __thread h2o_linklist_t live; /* every coroutine alive on this thread, oldest first */

static inline sk_co_t **extraspace(lua_State *L)
{
    return (sk_co_t **)lua_getextraspace(L);
}

size_t sk_co_alive(void)
{
    return alive;
}

void sk_co_note(sk_co_notes_t *notes, const char *key, size_t key_len, const char *value, size_t value_len)
{
    for (size_t i = 0; i != notes->nkeys; ++i) {
        if (strncmp(notes->keys[i], key, key_len) == 0 && notes->keys[i][key_len] == '\0') {
            snprintf(notes->values[i], sizeof(notes->values[i]), "%.*s", (int)value_len, value);
            return;
        }
    }
}

sk_co_t *sk_co_new(sk_vm_t *vm, sk_loop_t *loop)
{
    sk_co_t *co = h2o_mem_alloc(sizeof(*co));
    *co = (sk_co_t){.vm = vm, .loop = loop};
    if (vm->idle.n != 0) {
        --vm->idle.n;
        co->L = vm->idle.L[vm->idle.n];
        co->_ref = vm->idle.ref[vm->idle.n];
    } else {
        co->L = lua_newthread(vm->L);
        co->_ref = luaL_ref(vm->L, LUA_REGISTRYINDEX);
    }
    *extraspace(co->L) = co;
    sk_vm_retain(vm);
    ++alive;
    if (live.next == NULL)
        h2o_linklist_init_anchor(&live);
    h2o_linklist_insert(&live, &co->_live);
    return co;
}

/* returned: the coroutine's function ran to its end, so its thread is clean (every to-be-closed variable closed, no
 * open upvalue, the base call frame current) and another function can start on it */
static void release(sk_co_t *co, int returned)
{
    sk_vm_t *vm = co->vm;
    *extraspace(co->L) = NULL;
    if (returned && vm->idle.n < SK_VM_IDLE_THREADS) {
        lua_settop(co->L, 0);
        vm->idle.L[vm->idle.n] = co->L;
        vm->idle.ref[vm->idle.n] = co->_ref;
        ++vm->idle.n;
    } else {
        /* an error or an abandoned coroutine: close pending to-be-closed variables and free the stack now rather than
         * at the next GC cycle */
        lua_resetthread(co->L);
        luaL_unref(vm->L, LUA_REGISTRYINDEX, co->_ref);
    }
    h2o_linklist_unlink(&co->_live);
    --alive;
    free(co);
    sk_vm_release(vm);
}

static void on_resume(sk_deferred_t *d);

/* resumes with nargs values on co->L and handles the outcome */
static void resume(sk_co_t *co, int nargs)
{
    int nres = 0;
    /* every line logged until it parks or ends (its on_done included) names its request */
    const char *prev_id = sk_log_swap_request_id(co->request_id[0] != '\0' ? co->request_id : NULL);
    int status = lua_resume(co->L, co->vm->L, nargs, &nres);
    switch (status) {
    case LUA_YIELD:
        sk_log_swap_request_id(prev_id);
        if (co->_parked)
            return; /* a binding parked us; its completion calls sk_co_wake */
        /* a bare coroutine.yield() in a handler: drop the yielded values, continue on the next iteration */
        lua_pop(co->L, nres);
        co->_push = NULL;
        co->_parked = 1;
        sk_loop_defer(co->loop, &co->_resume, on_resume);
        return;
    case LUA_OK:
        co->on_done(co, 1, nres);
        break;
    default: {
        const char *msg = lua_tostring(co->L, -1);
        if (msg == NULL)
            msg = luaL_typename(co->L, -1);
        luaL_traceback(co->L, co->L, msg, 0);
        co->on_done(co, 0, 1);
        break;
    }
    }
    sk_log_swap_request_id(prev_id);
    release(co, status == LUA_OK);
}

void sk_co_start(sk_co_t *co, int nargs, sk_co_done_cb on_done, void *data)
{
    co->on_done = on_done;
    co->data = data;
    /* the function sits below its arguments; lua_resume starts it */
    resume(co, nargs);
}

/* the push of a deferred start: the function and its arguments are on the stack already */
static int push_nothing(lua_State *L, void *nargs)
{
    (void)L;
    return (int)(intptr_t)nargs;
}

void sk_co_start_later(sk_co_t *co, int nargs, sk_co_done_cb on_done, void *data)
{
    co->on_done = on_done;
    co->data = data;
    co->_parked = 1;
    sk_co_wake(co, push_nothing, (void *)(intptr_t)nargs);
}

static void on_resume(sk_deferred_t *d)
{
    sk_co_t *co = H2O_STRUCT_FROM_MEMBER(sk_co_t, _resume, d);
    int n = 0;
    co->_parked = 0;
    co->_cancel = NULL;
    if (co->_push != NULL)
        n = co->_push(co->L, co->_push_arg);
    resume(co, n);
}

sk_co_t *sk_co_of(lua_State *L)
{
    return *extraspace(L);
}

sk_co_t *sk_co_check(lua_State *L)
{
    sk_co_t *co = *extraspace(L);
    if (co == NULL)
        luaL_error(L, "cannot yield here: not in a request or consumer coroutine (I/O inside coroutine.wrap or at a "
                      "module's top level is not supported)");
    if (!lua_isyieldable(L))
        luaL_error(L, "cannot yield here: inside a C call boundary (metamethod, table.sort comparator, require)");
    if (co->_parked)
        luaL_error(L, "coroutine is already waiting for an operation");
    return co;
}

int sk_co_yield(lua_State *L, sk_co_t *co, sk_co_cancel_cb cancel, void *op)
{
    co->_parked = 1;
    co->_cancel = cancel;
    co->_cancel_arg = op;
    return lua_yield(L, 0);
}

void sk_co_wake(sk_co_t *co, sk_co_push_cb push, void *arg)
{
    co->_push = push;
    co->_push_arg = arg;
    sk_loop_defer(co->loop, &co->_resume, on_resume);
}

size_t sk_co_abandon_all(void)
{
    size_t n = 0;
    /* cancels may wake or create other coroutines; each pass takes the oldest one left until none is */
    while (live.next != NULL && !h2o_linklist_is_empty(&live)) {
        sk_co_t *co = H2O_STRUCT_FROM_MEMBER(sk_co_t, _live, live.next);
        int top = lua_gettop(co->L);
        if (h2o_linklist_is_linked(&co->_resume._link)) {
            /* woken and not yet resumed: the op now belongs to the push callback, which frees it */
            sk_loop_cancel_defer(&co->_resume);
            if (co->_push != NULL)
                co->_push(co->L, co->_push_arg);
        } else if (co->_parked && co->_cancel != NULL) {
            co->_cancel(co->_cancel_arg);
        }
        co->_parked = 0;
        co->_cancel = NULL;
        co->abandoned = 1;
        lua_settop(co->L, top);
        lua_pushliteral(co->L, "abandoned: the server stopped before the coroutine ended");
        co->on_done(co, 0, 1);
        release(co, 0);
        ++n;
    }
    return n;
}
