#include <stdio.h>
#include <stdlib.h>
#include "pool.h"

const char sk_mysql_err_pool_timeout[] = "pool wait timeout";
const char sk_mysql_err_unavailable[] = "mysql unavailable";
const char sk_mysql_err_shutting_down[] = "shutting down";

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

static void start_connect(sk_mysql_pool_t *pool);

#define HOOK(pool, name, ...)                                                                                                      \
    do {                                                                                                                           \
        if ((pool)->hooks != NULL && (pool)->hooks->name != NULL)                                                                  \
            (pool)->hooks->name((pool), ##__VA_ARGS__);                                                                            \
    } while (0)

/* ===== bookkeeping ===== */

/* frees the pool once it is disposing and its last connection is gone; callers touch the pool no more after this */
static void maybe_free(sk_mysql_pool_t *pool)
{
    if (pool->_disposing && pool->_open == 0) {
        sk_timer_stop(pool->loop, &pool->_retry);
        free(pool);
    }
}

static void remove_conn(sk_mysql_pool_t *pool, sk_mysql_conn_t *c)
{
    if (h2o_linklist_is_linked(&c->link))
        h2o_linklist_unlink(&c->link);
    h2o_linklist_unlink(&c->all_link);
    sk_mysql_conn_free(c);
    --pool->_open;
    HOOK(pool, on_open_delta, -1);
}

static void fail_waiters(sk_mysql_pool_t *pool, const char *err)
{
    while (!h2o_linklist_is_empty(&pool->_waiters)) {
        sk_mysql_waiter_t *w = H2O_STRUCT_FROM_MEMBER(sk_mysql_waiter_t, _link, pool->_waiters.next);
        h2o_linklist_unlink(&w->_link);
        sk_timer_stop(pool->loop, &w->_timer);
        w->_cb(w->_op, NULL, err);
    }
}

/* opens a replacement while callers wait and a slot is free, unless we are backing off after a failed connect */
static void maybe_replace(sk_mysql_pool_t *pool)
{
    if (!pool->_disposing && !h2o_linklist_is_empty(&pool->_waiters) && pool->_open < pool->size &&
        sk_now_ms() >= pool->_down_until)
        start_connect(pool);
}

/* ===== idle connections ===== */

static void on_idle_gone(sk_mysql_pool_t *pool, sk_mysql_conn_t *c)
{
    remove_conn(pool, c);
    maybe_free(pool);
}

static void on_idle_timeout(sk_timer_t *timer)
{
    sk_mysql_conn_t *c = H2O_STRUCT_FROM_MEMBER(sk_mysql_conn_t, idle_timer, timer);
    on_idle_gone(c->data, c);
}

static void on_idle_event(sk_op_t *op, sk_mysql_conn_t *c, const char *err)
{
    (void)op, (void)err;
    /* an idle link has nothing to say: EOF (server restarted, wait_timeout) or junk, either way it is finished */
    on_idle_gone(c->data, c);
}

/* hands a clean connection to the oldest waiter, or parks it idle */
static void give(sk_mysql_pool_t *pool, sk_mysql_conn_t *c)
{
    if (!h2o_linklist_is_empty(&pool->_waiters)) {
        sk_mysql_waiter_t *w = H2O_STRUCT_FROM_MEMBER(sk_mysql_waiter_t, _link, pool->_waiters.next);
        h2o_linklist_unlink(&w->_link);
        sk_timer_stop(pool->loop, &w->_timer);
        w->_cb(w->_op, c, NULL);
        return;
    }
    if (pool->_disposing) {
        remove_conn(pool, c);
        maybe_free(pool);
        return;
    }
    h2o_linklist_insert(pool->_idle.next, &c->link); /* at the head: the least recently used idle out first */
    c->idle_since = sk_now_ms();
    if (pool->idle_timeout_ms != 0)
        sk_timer_start(pool->loop, &c->idle_timer, pool->idle_timeout_ms, on_idle_timeout);
    sk_mysql_conn_watch_idle(c, on_idle_event);
}

/* ===== connecting ===== */

static void on_retry(sk_timer_t *timer)
{
    sk_mysql_pool_t *pool = H2O_STRUCT_FROM_MEMBER(sk_mysql_pool_t, _retry, timer);
    if (pool->_disposing)
        return;
    if (pool->_open == 0 || (!h2o_linklist_is_empty(&pool->_waiters) && pool->_open < pool->size))
        start_connect(pool);
}

static void on_connected(sk_op_t *op, sk_mysql_conn_t *c, const char *err)
{
    sk_mysql_pool_t *pool = c->data;
    (void)op;
    if (err != NULL) {
        /* as much of the message as fits (the compiler cannot see that the two together may be cut) */
        int room = (int)(sizeof(pool->_last_error) - sizeof(sk_mysql_err_unavailable) - 2);
        snprintf(pool->_last_error, sizeof(pool->_last_error), "%s: %.*s", sk_mysql_err_unavailable, room, c->error.message);
        HOOK(pool, on_connect_error, c->error.message);
        remove_conn(pool, c);
        pool->_down_until = sk_now_ms() + pool->_backoff_ms;
        sk_timer_start(pool->loop, &pool->_retry, pool->_backoff_ms, on_retry);
        pool->_backoff_ms = pool->_backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : pool->_backoff_ms * 2;
        /* nobody is left to serve the waiters: tell them now rather than at their wait timeout */
        if (pool->_open == 0)
            fail_waiters(pool, sk_mysql_err_unavailable);
        maybe_free(pool);
        return;
    }
    pool->_backoff_ms = BACKOFF_MIN_MS;
    pool->_down_until = 0;
    HOOK(pool, on_connect);
    give(pool, c);
}

static void start_connect(sk_mysql_pool_t *pool)
{
    sk_mysql_conn_t *c = sk_mysql_conn_new(pool->loop, pool->target);
    c->data = pool;
    h2o_linklist_insert(&pool->_all, &c->all_link);
    ++pool->_open;
    HOOK(pool, on_open_delta, 1);
    sk_mysql_conn_connect(c, NULL, on_connected); /* cannot fail at once (conn.h): a failure comes to on_connected */
}

/* ===== waiting ===== */

static void on_wait_timeout(sk_timer_t *timer)
{
    sk_mysql_waiter_t *w = H2O_STRUCT_FROM_MEMBER(sk_mysql_waiter_t, _timer, timer);
    h2o_linklist_unlink(&w->_link);
    HOOK(w->_pool, on_wait_timeout);
    w->_cb(w->_op, NULL, sk_mysql_err_pool_timeout);
}

const char *sk_mysql_pool_acquire(sk_mysql_pool_t *pool, sk_mysql_waiter_t *w, sk_op_t *op, sk_mysql_acquire_cb cb,
                                  sk_mysql_conn_t **conn)
{
    *conn = NULL;
    if (!h2o_linklist_is_empty(&pool->_idle)) {
        sk_mysql_conn_t *c = H2O_STRUCT_FROM_MEMBER(sk_mysql_conn_t, link, pool->_idle.next);
        h2o_linklist_unlink(&c->link);
        sk_timer_stop(pool->loop, &c->idle_timer);
        sk_mysql_conn_watch_idle(c, NULL);
        *conn = c;
        return NULL; /* at once: no cb */
    }
    if (pool->_disposing)
        return sk_mysql_err_shutting_down;
    if (pool->_open == 0 && sk_now_ms() < pool->_down_until)
        return sk_mysql_err_unavailable;
    *w = (sk_mysql_waiter_t){._cb = cb, ._op = op, ._pool = pool};
    h2o_linklist_insert(&pool->_waiters, &w->_link);
    sk_timer_start(pool->loop, &w->_timer, pool->wait_timeout_ms, on_wait_timeout);
    HOOK(pool, on_wait);
    if (pool->_open < pool->size && sk_now_ms() >= pool->_down_until)
        start_connect(pool);
    return NULL;
}

const char *sk_mysql_pool_last_error(const sk_mysql_pool_t *pool)
{
    return pool->_last_error;
}

void sk_mysql_pool_cancel(sk_mysql_waiter_t *w)
{
    if (h2o_linklist_is_linked(&w->_link))
        h2o_linklist_unlink(&w->_link);
    sk_timer_stop(w->_pool->loop, &w->_timer);
}

/* ===== giving back ===== */

static void on_cleaned(sk_op_t *op, sk_mysql_conn_t *c, const char *err)
{
    sk_mysql_pool_t *pool = c->data;
    (void)op;
    if (err != NULL || !c->connected) {
        sk_mysql_pool_discard(pool, c);
        return;
    }
    give(pool, c);
}

void sk_mysql_pool_release(sk_mysql_pool_t *pool, sk_mysql_conn_t *c)
{
    if (!c->connected || sk_mysql_conn_is_busy(c) || pool->_disposing) {
        sk_mysql_pool_discard(pool, c);
        return;
    }
    unsigned status = sk_mysql_conn_server_status(c);
    if ((status & SERVER_STATUS_AUTOCOMMIT) == 0) {
        /* SET autocommit=0 (or other session state we cannot see) would leak into the next lease: start afresh.
         * Neither start can fail at once (conn.h): a failure comes to on_cleaned, which discards the connection */
        sk_mysql_conn_reset(c, NULL, pool->target->query_timeout_ms, on_cleaned);
    } else if ((status & SERVER_STATUS_IN_TRANS) != 0) {
        sk_mysql_conn_query(c, NULL, "ROLLBACK", 8, pool->target->query_timeout_ms, on_cleaned);
    } else {
        give(pool, c);
    }
}

void sk_mysql_pool_discard(sk_mysql_pool_t *pool, sk_mysql_conn_t *c)
{
    remove_conn(pool, c);
    maybe_replace(pool);
    maybe_free(pool);
}

/* ===== life cycle ===== */

sk_mysql_pool_t *sk_mysql_pool_new(sk_loop_t *loop, const sk_mysql_target_t *target, size_t size, uint64_t wait_timeout_ms,
                                   uint64_t idle_timeout_ms, const sk_mysql_pool_hooks_t *hooks)
{
    sk_mysql_pool_t *pool = h2o_mem_alloc(sizeof(*pool));
    *pool = (sk_mysql_pool_t){.loop = loop,
                              .target = target,
                              .hooks = hooks,
                              .size = size != 0 ? size : 1,
                              .wait_timeout_ms = wait_timeout_ms,
                              .idle_timeout_ms = idle_timeout_ms,
                              ._backoff_ms = BACKOFF_MIN_MS};
    h2o_linklist_init_anchor(&pool->_idle);
    h2o_linklist_init_anchor(&pool->_all);
    h2o_linklist_init_anchor(&pool->_waiters);
    start_connect(pool);
    return pool;
}

void sk_mysql_pool_dispose(sk_mysql_pool_t *pool)
{
    pool->_disposing = 1;
    sk_timer_stop(pool->loop, &pool->_retry);
    fail_waiters(pool, sk_mysql_err_shutting_down);
    /* idle and still-connecting links go now; leased ones when their holder releases them */
    for (h2o_linklist_t *l = pool->_all.next, *next; l != &pool->_all; l = next) {
        next = l->next;
        sk_mysql_conn_t *c = H2O_STRUCT_FROM_MEMBER(sk_mysql_conn_t, all_link, l);
        if (h2o_linklist_is_linked(&c->link) || (!c->connected && sk_mysql_conn_is_busy(c)))
            remove_conn(pool, c);
    }
    maybe_free(pool);
}
