/*
 * lua_semaphore.c: `semaphore`, coroutines of one VM waiting for each other (OpenResty's ngx.semaphore, minus the
 * cross-request corner cases). Waiting parks the coroutine on its loop; posting wakes waiters in FIFO order, from
 * the loop. A semaphore belongs to the VM (worker) that created it: share it through module-level tables.
 *   local s = semaphore.new([n])     -- n initial resources (default 0)
 *   s:wait([timeout_ms])             -- true, or nil, "timeout"
 *   s:post([n])                      -- releases n (default 1)
 *   s:count()                        -- resources left (negative: that many waiters)
 */
#include <lauxlib.h>
#include "../../core/op.h"
#include "../../core/binding.h"

#define SEMAPHORE_MT "sk.semaphore"

typedef struct st_sema_t {
    lua_Integer count;
    h2o_linklist_t waiters;
} sema_t;

typedef struct st_waiter_t {
    sk_op_t super;
    h2o_linklist_t link;
    sk_timer_t timer;
    int granted;
} waiter_t;

static int push_outcome(lua_State *L, void *arg)
{
    waiter_t *w = arg;
    int granted = w->granted;
    free(w);
    if (granted) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushnil(L);
    lua_pushliteral(L, "timeout");
    return 2;
}

static void on_wait_timeout(sk_timer_t *timer)
{
    waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, timer, timer);
    h2o_linklist_unlink(&w->link);
    sk_op_wake(&w->super, push_outcome);
}

static void cancel_wait(void *arg)
{
    waiter_t *w = arg;
    sk_timer_stop(w->super.co->loop, &w->timer);
    if (h2o_linklist_is_linked(&w->link))
        h2o_linklist_unlink(&w->link);
    free(w);
}

static sema_t *check(lua_State *L)
{
    return luaL_checkudata(L, 1, SEMAPHORE_MT);
}

static int l_new(lua_State *L)
{
    lua_Integer n = luaL_optinteger(L, 1, 0);
    luaL_argcheck(L, n >= 0, 1, "must not be negative");
    sema_t *s = lua_newuserdatauv(L, sizeof(*s), 0);
    *s = (sema_t){.count = n};
    h2o_linklist_init_anchor(&s->waiters);
    luaL_setmetatable(L, SEMAPHORE_MT);
    return 1;
}

static int l_wait(lua_State *L)
{
    sema_t *s = check(L);
    lua_Integer timeout = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, timeout >= 0, 2, "must not be negative");
    if (s->count > 0 && h2o_linklist_is_empty(&s->waiters)) {
        --s->count;
        lua_pushboolean(L, 1);
        return 1;
    }
    if (timeout == 0 && lua_gettop(L) >= 2) {
        lua_pushnil(L);
        lua_pushliteral(L, "timeout");
        return 2;
    }
    sk_co_t *co = sk_co_check(L);
    waiter_t *w = h2o_mem_alloc(sizeof(*w));
    *w = (waiter_t){.super.co = co};
    h2o_linklist_insert(&s->waiters, &w->link);
    /* no timeout argument: wait up to a day rather than forever, so a lost post cannot pin a coroutine for good */
    sk_timer_start(co->loop, &w->timer, lua_gettop(L) >= 2 ? (uint64_t)timeout : 86400000, on_wait_timeout);
    return sk_op_yield(L, &w->super, cancel_wait);
}

static int l_post(lua_State *L)
{
    sema_t *s = check(L);
    lua_Integer n = luaL_optinteger(L, 2, 1);
    luaL_argcheck(L, n >= 1, 2, "must be at least 1");
    s->count += n;
    while (s->count > 0 && !h2o_linklist_is_empty(&s->waiters)) {
        waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, link, s->waiters.next);
        h2o_linklist_unlink(&w->link);
        sk_timer_stop(w->super.co->loop, &w->timer);
        w->granted = 1;
        --s->count;
        sk_op_wake(&w->super, push_outcome); /* resumes from the loop, not inside this call */
    }
    return 0;
}

static int l_count(lua_State *L)
{
    sema_t *s = check(L);
    size_t waiting = 0;
    for (h2o_linklist_t *l = s->waiters.next; l != &s->waiters; l = l->next)
        ++waiting;
    lua_pushinteger(L, s->count - (lua_Integer)waiting);
    return 1;
}

static void open_semaphore(lua_State *L)
{
    static const luaL_Reg methods[] = {{"wait", l_wait}, {"post", l_post}, {"count", l_count}, {NULL, NULL}};
    luaL_newmetatable(L, SEMAPHORE_MT);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {{"new", l_new}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setglobal(L, "semaphore");
}

const sk_binding_t sk_binding_semaphore = {.name = "semaphore", .open = open_semaphore};
