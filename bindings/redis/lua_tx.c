/*
 * redis_tx.c: redis.optimistic, the WATCH/read -> fn -> MULTI/writes/EXEC state machine retried in C on conflict,
 * and its per-thread gate on a hot key (bindings/README.md's redis section documents the Lua contract). redis_lua.c
 * opens it into the `redis` table.
 *
 * Read the gate section first (a FIFO of transactions per key and loop thread), then the state machine:
 * gate -> lease -> attempt (WATCH + reads) -> fn -> MULTI/EXEC -> backoff and again, or done.
 */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/co.h"
#include "../../core/config.h"
#include "lua_tx.h"
#include "lua_value.h"
#include "metrics.h"
#include "pool.h"
#include "reply.h"

/* the calling thread's pool, or raises */
static sk_redis_pool_t *check_pool(lua_State *L)
{
    sk_redis_pool_t *pool = sk_redis_pool_default();
    if (pool == NULL)
        luaL_error(L, "redis is not available on this thread");
    return pool;
}

static unsigned default_tries = 16;
/* the cap of the jittered backoff between optimistic attempts (redis.backoff_max_ms). Measured on a hot key at 256
 * connections: 8 ms tripled the conflicts and halved the sale's throughput; 64 ms spreads the herd. */
static unsigned backoff_max_ms = 64;
/* the same cap while the transaction holds a gate (redis.gate_backoff_max_ms): the herd of this thread waits behind
 * the gate, so a conflict can only come from another thread (or process) and nothing is gained by spreading out;
 * a long pause would only idle the gate, which every waiter on the key queues behind */
static unsigned gate_backoff_max_ms = 2;
static uint64_t gate_wait_ms = 1000; /* redis.gate_wait_ms: a waiter gives up with "busy" after this */
static size_t gate_queue = 4096;     /* redis.gate_queue: waiters per key and thread; beyond, "busy" at once */

/* ===== redis.optimistic: WATCH + reads -> fn -> MULTI + writes + EXEC, retried in C ===== */

/*
 * The request coroutine parks once for the whole transaction; this state machine drives it from hiredis callbacks,
 * a backoff timer and loop-deferred steps. fn runs on a nested Lua thread resumed from the loop, so it may yield,
 * but only through tx:call (any other binding refuses: the nested thread is not a request coroutine). A broken
 * connection fails the attempt and is never continued on another connection: WATCH state lives in the
 * connection. Every exit path hands the connection back with what it may still hold (dirty flags), and the pool
 * UNWATCHes/DISCARDs it before anyone else gets it.
 */
typedef enum { TX_LEASING, TX_GATING, TX_READING, TX_FN, TX_CALLING, TX_EXEC, TX_BACKOFF, TX_DONE } tx_state_t;
typedef enum { TX_R_EXEC, TX_R_VALUES, TX_R_CONFLICT, TX_R_ERROR, TX_R_EXEC_ERROR, TX_R_LUA_ERROR, TX_R_BUSY } tx_result_t;
typedef enum { GATE_NONE, GATE_WAITING, GATE_HELD } gate_state_t;
typedef struct st_gate_t gate_t;

typedef struct st_tx_op_t {
    sk_co_t *co;
    sk_redis_pool_t *pool;
    sk_redis_lease_t lease;
    sk_redis_conn_t *conn;
    int dirty;
    tx_state_t state;
    sk_redis_cmd_t *watch; /* NULL without keys */
    sk_redis_cmd_t **reads;
    size_t nreads;
    H2O_VECTOR(sk_redis_cmd_t *) writes;
    redisReply **read_replies;
    redisReply *call_reply, *exec_reply;
    const char *call_err, *fail;
    size_t awaiting, got;
    unsigned tries, attempt;
    int fn_ref, tx_ref, thread_ref;
    lua_State *T;
    int nvalues;
    tx_result_t result;
    char *errmsg; /* Lua error or EXEC error text */
    int yielded, cancelled, inflight;
    sk_timer_t backoff;
    sk_deferred_t step;
    /* the gate (gate == NULL without one) */
    gate_t *gate;
    gate_state_t gate_state;
    unsigned gate_width;
    h2o_linklist_t gate_link; /* in gate->waiters while GATE_WAITING */
    sk_timer_t gate_timer;
    uint64_t gate_queued_at;
} tx_op_t;

static char lua_error_marker; /* first value pushed for a Lua error in fn; the Lua wrapper re-raises it */
static __thread uint64_t rng_state;

static void tx_start_attempt(tx_op_t *op);
static void tx_lease(tx_op_t *op);
static void tx_finish(tx_op_t *op, tx_result_t result, const char *errstr);

/* ===== the gate: at most gate_width transactions per key and loop thread, the others queue FIFO ===== */

/*
 * Without it, N coroutines of a thread WATCHing one hot key conflict with each other: only one EXEC per round wins,
 * the rest retry, and the herd grows with the load (contention collapse). With it, a thread runs at most gate_width
 * transactions on that key at once, so conflicts can only come from other threads. The map key -> gate is
 * per thread (no locks); a gate exists while it has holders or waiters and is freed when both are gone.
 * A slot freed by tx_finish (maybe inside a hiredis callback) passes to the next waiter at once, but that waiter
 * only runs from a deferred step on the loop: never recursively inside the callback that finished its predecessor.
 */
struct st_gate_t {
    gate_t *next; /* hash chain */
    uint64_t hash;
    unsigned holders;
    size_t nwaiting;
    h2o_linklist_t waiters; /* tx_op_t.gate_link, oldest first */
    size_t keylen;
    char key[1];
};

static __thread struct {
    gate_t **buckets; /* NULL while no gate exists */
    size_t nbuckets, count;
} gates;

static uint64_t gate_hash(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i != len; ++i)
        h = (h ^ (unsigned char)key[i]) * 0x100000001b3ull;
    return h;
}

static gate_t **gate_slot(uint64_t hash, const char *key, size_t len)
{
    gate_t **slot = &gates.buckets[hash & (gates.nbuckets - 1)];
    for (; *slot != NULL; slot = &(*slot)->next)
        if ((*slot)->hash == hash && (*slot)->keylen == len && memcmp((*slot)->key, key, len) == 0)
            break;
    return slot;
}

/* the gate of key on this thread, created empty if there is none */
static gate_t *gate_get(const char *key, size_t len)
{
    if (gates.buckets == NULL) {
        gates.nbuckets = 16;
        gates.buckets = h2o_mem_alloc(gates.nbuckets * sizeof(*gates.buckets));
        memset(gates.buckets, 0, gates.nbuckets * sizeof(*gates.buckets));
    }
    uint64_t hash = gate_hash(key, len);
    gate_t **slot = gate_slot(hash, key, len);
    if (*slot != NULL)
        return *slot;
    if (gates.count >= gates.nbuckets) {
        size_t n = gates.nbuckets * 2;
        gate_t **b = h2o_mem_alloc(n * sizeof(*b));
        memset(b, 0, n * sizeof(*b));
        for (size_t i = 0; i != gates.nbuckets; ++i)
            for (gate_t *g = gates.buckets[i], *next; g != NULL; g = next) {
                next = g->next;
                g->next = b[g->hash & (n - 1)];
                b[g->hash & (n - 1)] = g;
            }
        free(gates.buckets);
        gates.buckets = b;
        gates.nbuckets = n;
        slot = gate_slot(hash, key, len);
    }
    gate_t *g = h2o_mem_alloc(offsetof(gate_t, key) + len + 1);
    *g = (gate_t){.hash = hash, .keylen = len};
    h2o_linklist_init_anchor(&g->waiters);
    memcpy(g->key, key, len);
    g->key[len] = '\0';
    *slot = g;
    ++gates.count;
    return g;
}

static void gate_free_if_unused(gate_t *g)
{
    if (g->holders != 0 || !h2o_linklist_is_empty(&g->waiters))
        return;
    gate_t **slot = gate_slot(g->hash, g->key, g->keylen);
    *slot = g->next;
    free(g);
    if (--gates.count == 0) {
        free(gates.buckets);
        gates.buckets = NULL;
        gates.nbuckets = 0;
    }
}

static void on_gate_granted(sk_deferred_t *d)
{
    tx_op_t *op = H2O_STRUCT_FROM_MEMBER(tx_op_t, step, d);
    tx_lease(op);
}

/* hands free slots to the oldest waiters; each starts from the loop */
static void gate_grant(gate_t *g)
{
    while (!h2o_linklist_is_empty(&g->waiters)) {
        tx_op_t *w = H2O_STRUCT_FROM_MEMBER(tx_op_t, gate_link, g->waiters.next);
        if (g->holders >= w->gate_width)
            break;
        h2o_linklist_unlink(&w->gate_link);
        --g->nwaiting;
        ++g->holders;
        w->gate_state = GATE_HELD;
        sk_timer_stop(w->co->loop, &w->gate_timer);
        sk_histogram_observe(sk_redis_metrics.gate_wait_seconds, (sk_now_ms() - w->gate_queued_at) / 1000.0);
        sk_loop_defer(w->co->loop, &w->step, on_gate_granted);
    }
}

static void on_gate_timeout(sk_timer_t *timer)
{
    tx_op_t *op = H2O_STRUCT_FROM_MEMBER(tx_op_t, gate_timer, timer);
    sk_counter_inc(sk_redis_metrics.gate_timeouts);
    sk_histogram_observe(sk_redis_metrics.gate_wait_seconds, (sk_now_ms() - op->gate_queued_at) / 1000.0);
    tx_finish(op, TX_R_BUSY, NULL); /* leaves the queue (tx_gate_leave) */
}

/* enters the gate of key: 0 when it holds a slot now, 1 when queued (on_gate_granted or on_gate_timeout follows),
 * -1 when the queue is full */
static int tx_gate_enter(tx_op_t *op, const char *key, size_t len, unsigned width)
{
    gate_t *g = gate_get(key, len);
    op->gate_width = width;
    if (g->holders < width && h2o_linklist_is_empty(&g->waiters)) {
        ++g->holders;
        op->gate = g;
        op->gate_state = GATE_HELD;
        return 0;
    }
    if (g->nwaiting >= gate_queue) {
        sk_counter_inc(sk_redis_metrics.gate_rejected);
        gate_free_if_unused(g);
        return -1;
    }
    op->gate = g;
    op->gate_state = GATE_WAITING;
    op->gate_queued_at = sk_now_ms();
    h2o_linklist_insert(&g->waiters, &op->gate_link);
    ++g->nwaiting;
    sk_counter_inc(sk_redis_metrics.gate_waits);
    sk_timer_start(op->co->loop, &op->gate_timer, gate_wait_ms, on_gate_timeout);
    return 1;
}

/* leaves the gate, waiting or holding; a freed slot goes to the next waiter (which starts from the loop) */
static void tx_gate_leave(tx_op_t *op)
{
    gate_t *g = op->gate;
    if (g == NULL)
        return;
    if (op->gate_state == GATE_WAITING) {
        h2o_linklist_unlink(&op->gate_link);
        --g->nwaiting;
        sk_timer_stop(op->co->loop, &op->gate_timer);
    } else {
        --g->holders;
    }
    op->gate = NULL;
    op->gate_state = GATE_NONE;
    gate_grant(g);
    gate_free_if_unused(g);
}

/* ===== the transaction ===== */

static tx_op_t **check_tx(lua_State *L)
{
    return luaL_checkudata(L, 1, "sk.redis.tx");
}

static void tx_clear_attempt(tx_op_t *op)
{
    for (size_t i = 0; i != op->nreads; ++i)
        if (op->read_replies[i] != NULL) {
            freeReplyObject(op->read_replies[i]);
            op->read_replies[i] = NULL;
        }
    for (size_t i = 0; i != op->writes.size; ++i)
        free(op->writes.entries[i]);
    op->writes.size = 0;
    if (op->call_reply != NULL) {
        freeReplyObject(op->call_reply);
        op->call_reply = NULL;
    }
}

static void tx_free(tx_op_t *op)
{
    tx_clear_attempt(op);
    free(op->writes.entries);
    if (op->exec_reply != NULL)
        freeReplyObject(op->exec_reply);
    free(op->watch);
    for (size_t i = 0; i != op->nreads; ++i)
        free(op->reads[i]);
    free(op->reads);
    free(op->read_replies);
    free(op->errmsg);
    free(op);
}

/* drops the Lua anchors; only while the VM is alive (not after a cancel) */
static void tx_unref(tx_op_t *op, lua_State *L)
{
    lua_rawgeti(L, LUA_REGISTRYINDEX, op->tx_ref);
    *(tx_op_t **)lua_touserdata(L, -1) = NULL; /* a tx kept beyond fn raises instead of touching freed memory */
    lua_pop(L, 1);
    luaL_unref(L, LUA_REGISTRYINDEX, op->tx_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, op->fn_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, op->thread_ref);
    op->thread_ref = LUA_NOREF;
    op->T = NULL;
}

static void tx_maybe_free(tx_op_t *op)
{
    if (op->state == TX_DONE && op->inflight == 0 && op->cancelled)
        tx_free(op);
}

static int push_tx(lua_State *L, void *arg);

/* ends the transaction: the connection goes back (cleaned by the pool if dirty), then the coroutine resumes */
static void tx_finish(tx_op_t *op, tx_result_t result, const char *errstr)
{
    op->state = TX_DONE;
    op->result = result;
    if (errstr != NULL)
        op->fail = errstr;
    sk_timer_stop(op->co->loop, &op->backoff);
    sk_loop_cancel_defer(&op->step);
    sk_redis_lease_cancel(&op->lease);
    if (op->conn != NULL) {
        sk_redis_pool_release(op->pool, op->conn, op->dirty);
        op->conn = NULL;
    }
    tx_gate_leave(op); /* every exit passes here: success, conflicts, errors, a Lua error in fn, a cancel */
    switch (result) {
    case TX_R_EXEC:
        sk_counter_inc(sk_redis_metrics.tx_ok);
        sk_histogram_observe(sk_redis_metrics.tx_retries, op->attempt - 1);
        break;
    case TX_R_VALUES:
        sk_counter_inc(sk_redis_metrics.tx_readonly);
        break;
    case TX_R_CONFLICT:
        sk_counter_inc(sk_redis_metrics.tx_conflict);
        break;
    case TX_R_BUSY:
        sk_counter_inc(sk_redis_metrics.tx_busy);
        break;
    default:
        sk_counter_inc(sk_redis_metrics.tx_error);
        break;
    }
    if (op->cancelled)
        tx_maybe_free(op);
    else if (op->yielded)
        sk_co_wake(op->co, push_tx, op);
    /* else: l_optimistic is still on the stack and pushes the result itself */
}

/* --- step 1: WATCH + declared reads, pipelined --- */

static void tx_run_fn(sk_deferred_t *d);

/* a send failed because the connection is closing: the replies of what was already sent fail too, so finish only
 * once they are in (or now, if none is) */
static void fail_broken(tx_op_t *op)
{
    if (op->inflight == 0)
        tx_finish(op, TX_R_ERROR, sk_redis_err_closed);
    else
        op->awaiting = op->got + op->inflight, op->fail = sk_redis_err_closed;
}

static void on_tx_read_reply(redisReply *reply, const char *errstr, void *data)
{
    tx_op_t *op = data;
    --op->inflight;
    if (op->state != TX_READING) {
        tx_maybe_free(op);
        return;
    }
    size_t idx = op->got++;
    if (reply == NULL) {
        if (op->fail == NULL)
            op->fail = errstr;
    } else if (op->watch != NULL && idx == 0) {
        if (reply->type == REDIS_REPLY_ERROR && op->fail == NULL)
            op->fail = sk_redis_err_watch_failed;
    } else {
        op->read_replies[idx - (op->watch != NULL)] = sk_redis_reply_dup(reply);
    }
    if (op->got != op->awaiting)
        return;
    if (op->fail != NULL) {
        tx_finish(op, TX_R_ERROR, NULL);
        return;
    }
    op->state = TX_FN;
    sk_loop_defer(op->co->loop, &op->step, tx_run_fn);
}

static int tx_send(tx_op_t *op, const sk_redis_cmd_t *c, sk_redis_reply_cb cb)
{
    if (sk_redis_conn_command(op->conn, c->argc, c->argv, c->lens, cb, op) != 0)
        return -1;
    ++op->inflight;
    return 0;
}

static void tx_start_attempt(tx_op_t *op)
{
    ++op->attempt;
    sk_counter_inc(sk_redis_metrics.tx_attempts);
    tx_clear_attempt(op);
    op->state = TX_READING;
    op->got = 0;
    op->awaiting = (op->watch != NULL) + op->nreads;
    op->fail = NULL;
    if (op->awaiting == 0) {
        op->state = TX_FN;
        sk_loop_defer(op->co->loop, &op->step, tx_run_fn);
        return;
    }
    if (op->watch != NULL) {
        op->dirty |= SK_REDIS_DIRTY_WATCH; /* before sending: a reply lost to a broken connection still counts */
        if (tx_send(op, op->watch, on_tx_read_reply) != 0)
            goto Broken;
    }
    for (size_t i = 0; i != op->nreads; ++i)
        if (tx_send(op, op->reads[i], on_tx_read_reply) != 0)
            goto Broken;
    return;
Broken:
    fail_broken(op);
}

static void on_tx_leased(sk_redis_lease_t *lease, sk_redis_conn_t *conn, const char *errstr);

/* asks the pool for the connection the attempts run on (after the gate, if any: a waiter holds no connection) */
static void tx_lease(tx_op_t *op)
{
    const char *err;
    op->state = TX_LEASING;
    sk_redis_conn_t *conn = sk_redis_pool_lease(op->pool, &op->lease, on_tx_leased, &err);
    if (conn != NULL) {
        op->conn = conn;
        tx_start_attempt(op);
    } else if (err != NULL) {
        tx_finish(op, TX_R_ERROR, err);
    }
}

static void on_tx_leased(sk_redis_lease_t *lease, sk_redis_conn_t *conn, const char *errstr)
{
    tx_op_t *op = H2O_STRUCT_FROM_MEMBER(tx_op_t, lease, lease);
    if (conn == NULL) {
        tx_finish(op, TX_R_ERROR, errstr);
        return;
    }
    op->conn = conn;
    tx_start_attempt(op);
}

/* --- step 2: fn on a nested thread --- */

static void tx_fn_status(tx_op_t *op, int status, int nres);

static void push_read_replies(lua_State *T, tx_op_t *op)
{
    lua_createtable(T, (int)op->nreads, 0);
    for (size_t i = 0; i != op->nreads; ++i) {
        /* a sequence of the reads' values: nil holes stay holes (index by position), an error reply is false */
        redisReply *r = op->read_replies[i];
        if (r->type == REDIS_REPLY_ERROR)
            lua_pushboolean(T, 0);
        else
            sk_redis_value_push(T, r, 0);
        lua_rawseti(T, -2, (lua_Integer)i + 1);
    }
}

static void tx_run_fn(sk_deferred_t *d)
{
    tx_op_t *op = H2O_STRUCT_FROM_MEMBER(tx_op_t, step, d);
    lua_State *L = op->co->L;
    if (op->T == NULL) {
        /* a fresh thread per attempt: one that raised is dead and cannot be reused */
        op->T = lua_newthread(L);
        op->thread_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        /* new threads copy the main thread's extra space, where core/co.c keeps "which request coroutine";
         * clear it so bindings other than tx:call refuse to yield here instead of parking the wrong coroutine */
        *(void **)lua_getextraspace(op->T) = NULL;
        lua_rawgeti(op->T, LUA_REGISTRYINDEX, op->fn_ref);
        lua_rawgeti(op->T, LUA_REGISTRYINDEX, op->tx_ref);
        push_read_replies(op->T, op);
        int nres = 0, status = lua_resume(op->T, NULL, 2, &nres);
        tx_fn_status(op, status, nres);
    } else {
        /* resuming after tx:call */
        int n = sk_redis_value_push_result(op->T, op->call_reply, op->call_err);
        op->call_reply = NULL;
        int nres = 0, status = lua_resume(op->T, NULL, n, &nres);
        tx_fn_status(op, status, nres);
    }
}

static void on_tx_exec_reply(redisReply *reply, const char *errstr, void *data);

static void tx_fn_status(tx_op_t *op, int status, int nres)
{
    lua_State *T = op->T;
    if (status == LUA_YIELD && op->state == TX_CALLING)
        return; /* tx:call sent its command; on_tx_call_reply resumes fn */
    if (status == LUA_YIELD) {
        lua_pop(T, nres);
        lua_pushliteral(T, "redis.optimistic: fn may only yield through tx:call (no other I/O inside fn)");
        status = LUA_ERRRUN;
    }
    if (status != LUA_OK) {
        const char *msg = lua_tostring(T, -1);
        luaL_traceback(T, T, msg != NULL ? msg : "(error object is not a string)", 0);
        op->errmsg = h2o_strdup(NULL, lua_tostring(T, -1), SIZE_MAX).base;
        tx_finish(op, TX_R_LUA_ERROR, NULL);
        return;
    }
    op->nvalues = nres;
    if (op->writes.size == 0) {
        tx_finish(op, TX_R_VALUES, NULL); /* the pool UNWATCHes */
        return;
    }
    static const char *multi_argv[] = {"MULTI"}, *exec_argv[] = {"EXEC"};
    static size_t multi_len[] = {5}, exec_len[] = {4};
    static const sk_redis_cmd_t multi = {1, multi_argv, multi_len}, exec = {1, exec_argv, exec_len};
    op->state = TX_EXEC;
    op->got = 0;
    op->awaiting = op->writes.size + 2;
    op->fail = NULL;
    op->dirty |= SK_REDIS_DIRTY_MULTI;
    if (tx_send(op, &multi, on_tx_exec_reply) != 0)
        goto Broken;
    for (size_t i = 0; i != op->writes.size; ++i)
        if (tx_send(op, op->writes.entries[i], on_tx_exec_reply) != 0)
            goto Broken;
    if (tx_send(op, &exec, on_tx_exec_reply) != 0)
        goto Broken;
    return;
Broken:
    fail_broken(op);
}

/* --- step 3: MULTI, writes, EXEC --- */

static uint64_t next_random(void)
{
    if (rng_state == 0)
        rng_state = sk_now_ms() * 0x9E3779B97F4A7C15ull + (uintptr_t)&rng_state;
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void on_tx_backoff(sk_timer_t *timer)
{
    tx_op_t *op = H2O_STRUCT_FROM_MEMBER(tx_op_t, backoff, timer);
    /* the last attempt's thread is done; drop it here, on the loop, not inside hiredis */
    luaL_unref(op->co->L, LUA_REGISTRYINDEX, op->thread_ref);
    op->thread_ref = LUA_NOREF;
    op->T = NULL;
    tx_start_attempt(op);
}

static void on_tx_exec_reply(redisReply *reply, const char *errstr, void *data)
{
    tx_op_t *op = data;
    --op->inflight;
    if (op->state != TX_EXEC) {
        tx_maybe_free(op);
        return;
    }
    int last = ++op->got == op->awaiting;
    if (reply == NULL) {
        if (op->fail == NULL)
            op->fail = errstr;
    } else if (last && op->fail == NULL) {
        op->exec_reply = sk_redis_reply_dup(reply);
    }
    if (!last)
        return;
    if (op->fail != NULL) {
        tx_finish(op, TX_R_ERROR, NULL);
        return;
    }
    /* EXEC ended both the MULTI and the WATCHes, whatever it answered */
    op->dirty = 0;
    redisReply *r = op->exec_reply;
    if (r->type == REDIS_REPLY_NIL) {
        /* a null multi-bulk: a WATCHed key changed. (EXECABORT, a queueing error, is an error reply instead and is
         * never retried.) */
        freeReplyObject(r);
        op->exec_reply = NULL;
        sk_counter_inc(sk_redis_metrics.tx_conflicts);
        if (op->attempt >= op->tries) {
            tx_finish(op, TX_R_CONFLICT, sk_redis_err_conflict);
            return;
        }
        /* fn reruns on a new thread with fresh reads, after a jittered exponential pause (full jitter) */
        op->state = TX_BACKOFF;
        unsigned shift = op->attempt - 1 < 10 ? op->attempt - 1 : 10;
        uint64_t cap_us = 1000ull << shift, max_ms = op->gate != NULL ? gate_backoff_max_ms : backoff_max_ms;
        if (cap_us > max_ms * 1000ull)
            cap_us = max_ms * 1000ull;
        uint64_t delay_us = next_random() % (cap_us + 1);
        sk_timer_start(op->co->loop, &op->backoff, delay_us / 1000, on_tx_backoff);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        op->errmsg = h2o_strdup(NULL, r->str, r->len).base;
        tx_finish(op, TX_R_EXEC_ERROR, NULL);
        return;
    }
    tx_finish(op, TX_R_EXEC, NULL);
}

/* --- tx methods, called by fn on the nested thread --- */

static tx_op_t *check_tx_running(lua_State *L, const char *method)
{
    tx_op_t *op = *check_tx(L);
    if (op == NULL || op->T != L || op->state != TX_FN)
        luaL_error(L, "tx:%s: only inside the transaction's fn, while it runs", method);
    return op;
}

static void on_tx_call_reply(redisReply *reply, const char *errstr, void *data)
{
    tx_op_t *op = data;
    --op->inflight;
    if (op->state != TX_CALLING) {
        tx_maybe_free(op);
        return;
    }
    op->call_reply = reply != NULL ? sk_redis_reply_dup(reply) : NULL;
    op->call_err = errstr;
    op->state = TX_FN;
    sk_loop_defer(op->co->loop, &op->step, tx_run_fn);
}

static int l_tx_call(lua_State *L)
{
    tx_op_t *op = check_tx_running(L, "call");
    int top = lua_gettop(L);
    luaL_checkstring(L, 2);
    sk_redis_value_normalize_args(L, 2, top, "tx:call");
    if (!lua_isyieldable(L))
        return luaL_error(L, "tx:call: cannot yield here (inside a metamethod, table.sort or pcall'd C function)");
    sk_redis_cmd_t *c = sk_redis_value_to_cmd(L, 0, NULL, 2, top - 1);
    int ret = tx_send(op, c, on_tx_call_reply);
    free(c);
    if (ret != 0) {
        lua_pushnil(L);
        lua_pushstring(L, sk_redis_err_closed);
        return 2;
    }
    op->state = TX_CALLING;
    return lua_yield(L, 0);
}

static int l_tx_queue(lua_State *L)
{
    tx_op_t *op = check_tx_running(L, "queue");
    int top = lua_gettop(L);
    luaL_checkstring(L, 2);
    sk_redis_value_normalize_args(L, 2, top, "tx:queue");
    h2o_vector_reserve(NULL, &op->writes, op->writes.size + 1);
    op->writes.entries[op->writes.size++] = sk_redis_value_to_cmd(L, 0, NULL, 2, top - 1);
    lua_pushinteger(L, (lua_Integer)op->writes.size);
    return 1;
}

/* --- the Lua entry --- */

static int push_tx(lua_State *L, void *arg)
{
    tx_op_t *op = arg;
    int n;
    switch (op->result) {
    case TX_R_EXEC:
        sk_redis_value_push(L, op->exec_reply, 0);
        lua_xmove(op->T, L, op->nvalues);
        n = 1 + op->nvalues;
        break;
    case TX_R_VALUES:
        lua_xmove(op->T, L, op->nvalues);
        n = op->nvalues;
        break;
    case TX_R_EXEC_ERROR:
        lua_pushboolean(L, 0);
        lua_pushstring(L, op->errmsg);
        n = 2;
        break;
    case TX_R_LUA_ERROR:
        lua_pushlightuserdata(L, &lua_error_marker);
        lua_pushstring(L, op->errmsg);
        n = 2;
        break;
    case TX_R_BUSY:
        lua_pushnil(L);
        lua_pushstring(L, sk_redis_err_busy);
        n = 2;
        break;
    default:
        lua_pushnil(L);
        lua_pushstring(L, op->fail != NULL ? op->fail : sk_redis_err_closed);
        n = 2;
        break;
    }
    tx_unref(op, L);
    if (op->inflight == 0)
        tx_free(op);
    else
        op->cancelled = 1; /* nobody to wake any more: the last callback frees it */
    return n;
}

static void cancel_tx(void *arg)
{
    tx_op_t *op = arg;
    op->cancelled = 1;
    if (op->state != TX_DONE)
        tx_finish(op, TX_R_ERROR, sk_redis_err_closed);
    else
        tx_maybe_free(op);
}

static int l_optimistic(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    sk_co_t *co = sk_co_check(L);
    sk_redis_pool_t *pool = check_pool(L);
    lua_getfield(L, 1, "fn");
    luaL_argcheck(L, lua_isfunction(L, -1), 1, "fn must be a function");
    lua_getfield(L, 1, "tries");
    lua_Integer tries = luaL_optinteger(L, -1, default_tries);
    luaL_argcheck(L, tries >= 1 && tries <= 1000, 1, "tries must be between 1 and 1000");
    lua_getfield(L, 1, "watch");
    if (!lua_isnil(L, -1))
        luaL_argcheck(L, lua_istable(L, -1), 1, "watch must be a table of keys");
    lua_getfield(L, 1, "read");
    if (!lua_isnil(L, -1))
        luaL_argcheck(L, lua_istable(L, -1), 1, "read must be a table of commands");
    lua_getfield(L, 1, "gate");
    int has_gate = lua_toboolean(L, 6);
    if (has_gate) {
        luaL_argcheck(L, lua_type(L, 6) == LUA_TSTRING || lua_isboolean(L, 6), 1, "gate must be a key (string) or true");
        luaL_argcheck(L, lua_type(L, 6) == LUA_TSTRING || (lua_istable(L, 4) && luaL_len(L, 4) > 0), 1,
                      "gate = true needs a watch key");
    }
    lua_getfield(L, 1, "gate_width");
    lua_Integer gate_width = luaL_optinteger(L, 7, 1);
    luaL_argcheck(L, gate_width >= 1 && gate_width <= 1000, 1, "gate_width must be between 1 and 1000");
    size_t nreads = lua_istable(L, 5) ? (size_t)luaL_len(L, 5) : 0;
    for (size_t i = 1; i <= nreads; ++i) {
        lua_rawgeti(L, 5, (lua_Integer)i);
        luaL_argcheck(L, lua_istable(L, -1) && luaL_len(L, -1) >= 1, 1, "each read must be a command table like {\"GET\", key}");
        lua_pop(L, 1);
    }

    tx_op_t *op = h2o_mem_alloc(sizeof(*op));
    *op = (tx_op_t){
        .co = co, .pool = pool, .tries = (unsigned)tries, .fn_ref = LUA_NOREF, .tx_ref = LUA_NOREF, .thread_ref = LUA_NOREF};
    if (lua_istable(L, 4) && luaL_len(L, 4) > 0) {
        static const char *watch_word[] = {"WATCH"};
        op->watch = sk_redis_value_table_to_cmd(L, 4, 1, watch_word, "redis.optimistic watch");
    }
    op->nreads = nreads;
    op->reads = h2o_mem_alloc((nreads + 1) * sizeof(*op->reads));
    op->read_replies = h2o_mem_alloc((nreads + 1) * sizeof(*op->read_replies));
    for (size_t i = 0; i != nreads; ++i) {
        lua_rawgeti(L, 5, (lua_Integer)i + 1);
        op->reads[i] = sk_redis_value_table_to_cmd(L, -1, 0, NULL, "redis.optimistic read");
        op->read_replies[i] = NULL;
        lua_pop(L, 1);
    }
    lua_pushvalue(L, 2);
    op->fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    *(tx_op_t **)lua_newuserdatauv(L, sizeof(tx_op_t *), 0) = op;
    luaL_setmetatable(L, "sk.redis.tx");
    op->tx_ref = luaL_ref(L, LUA_REGISTRYINDEX);

    if (has_gate) {
        /* gate = true: the first watch key, as WATCH will send it (normalized) */
        size_t keylen;
        const char *key = lua_type(L, 6) == LUA_TSTRING ? lua_tolstring(L, 6, &keylen) : op->watch->argv[1];
        if (lua_type(L, 6) != LUA_TSTRING)
            keylen = op->watch->lens[1];
        switch (tx_gate_enter(op, key, keylen, (unsigned)gate_width)) {
        case 0:
            tx_lease(op);
            break;
        case 1:
            op->state = TX_GATING;
            break;
        default:
            tx_finish(op, TX_R_BUSY, NULL);
            break;
        }
    } else {
        tx_lease(op);
    }
    if (op->state == TX_DONE) /* failed before any reply: answer without yielding */
        return push_tx(L, op);
    op->yielded = 1;
    return sk_co_yield(L, co, cancel_tx, op);
}

/* the Lua face of redis.optimistic: re-raises an error from fn in the caller (a C function cannot raise after it
 * yielded: its Lua caller resumes directly) */
static const char optimistic_lua[] = "local impl, marker = ...\n"
                                     "local pack, unpack = table.pack, table.unpack\n"
                                     "return function(opts)\n"
                                     "    local r = pack(impl(opts))\n"
                                     "    if r[1] == marker then error(r[2], 0) end\n"
                                     "    return unpack(r, 1, r.n)\n"
                                     "end\n";

/* ===== set-up ===== */

void sk_redis_tx_init(sk_config_t *cfg)
{
    long long tries = sk_config_get_int(cfg, "redis.tries", 16);
    default_tries = tries < 1 ? 1 : tries > 1000 ? 1000 : (unsigned)tries;
    long long backoff = sk_config_get_int(cfg, "redis.backoff_max_ms", 64);
    backoff_max_ms = backoff < 1 ? 1 : backoff > 1000 ? 1000 : (unsigned)backoff;
    long long gate_backoff = sk_config_get_int(cfg, "redis.gate_backoff_max_ms", 2);
    gate_backoff_max_ms = gate_backoff < 1 ? 1 : gate_backoff > 1000 ? 1000 : (unsigned)gate_backoff;
    long long wait = sk_config_get_int(cfg, "redis.gate_wait_ms", 1000);
    gate_wait_ms = wait < 1 ? 1 : (uint64_t)wait;
    long long queue = sk_config_get_int(cfg, "redis.gate_queue", 4096);
    gate_queue = queue < 0 ? 0 : (size_t)queue;
}

void sk_redis_tx_open(lua_State *L)
{
    static const luaL_Reg tx_methods[] = {{"call", l_tx_call}, {"queue", l_tx_queue}, {NULL, NULL}};
    luaL_newmetatable(L, "sk.redis.tx");
    luaL_newlib(L, tx_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    if (luaL_loadbuffer(L, optimistic_lua, sizeof(optimistic_lua) - 1, "=redis.optimistic") != LUA_OK)
        lua_error(L);
    lua_pushcfunction(L, l_optimistic);
    lua_pushlightuserdata(L, &lua_error_marker);
    lua_call(L, 2, 1);
    lua_setfield(L, -2, "optimistic");
    lua_pushstring(L, sk_redis_err_conflict);
    lua_setfield(L, -2, "CONFLICT");
}
