/*
 * optimistic.c: the optimistic transaction's state machine (optimistic.h): WATCH + reads -> fn -> MULTI + writes +
 * EXEC, retried in C on conflict, through the gate (gate.h) and on a leased connection (pool.h).
 *
 * Read in the order a transaction runs: start (gate, lease), step 1 (the attempt's reads), step 2 (fn's turns),
 * step 3 (EXEC and the backoff), then the end (finish, release). Every reply callback first checks that the state is
 * still the one its command was sent in: a transaction that ended (or was released) meanwhile only counts the reply.
 */
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "metrics.h"
#include "optimistic.h"
#include "redirect.h"
#include "reply.h"
#include "route.h"

/* the backoff caps: measured on a hot key at 256 connections, an 8 ms cap tripled the conflicts and halved the
 * sale's throughput, 64 ms spreads the herd. Behind a gate the herd of this thread already waits, so a conflict can
 * only come from another thread (or process): a long pause would only idle the gate, hence 2 ms. */
sk_redis_optimistic_config_t sk_redis_optimistic_config = {
    .tries = 16, .backoff_max_ms = 64, .gate_backoff_max_ms = 2, .gate_wait_ms = 1000, .gate_queue = 4096};

static __thread uint64_t rng_state;

static void start_attempt(sk_redis_optimistic_t *tx);
static void finish(sk_redis_optimistic_t *tx, sk_redis_optimistic_result_t result, const char *errstr);
static int is_stale(sk_redis_optimistic_t *tx, sk_redis_optimistic_state_t expected);
static int redirected(sk_redis_optimistic_t *tx, const char *errstr);

/* ===== start: the gate, then a lease ===== */

static sk_redis_optimistic_t *tx_of(sk_op_t *op)
{
    return H2O_STRUCT_FROM_MEMBER(sk_redis_optimistic_t, super, op);
}

static void on_leased(sk_op_t *op, sk_redis_conn_t *conn, const char *errstr)
{
    sk_redis_optimistic_t *tx = tx_of(op);
    if (conn == NULL) {
        if (!(errstr == sk_redis_err_unavailable && redirected(tx, errstr)))
            finish(tx, SK_REDIS_OPTIMISTIC_FAILED, errstr);
        return;
    }
    tx->_conn = conn;
    start_attempt(tx);
}

/* asks the pool for the connection the attempts run on (after the gate, if any: a waiter holds no connection) */
static void lease(sk_redis_optimistic_t *tx)
{
    const char *err = sk_redis_err_unavailable;
    tx->state = SK_REDIS_OPTIMISTIC_LEASING;
    if (tx->_cluster != NULL && (tx->pool = sk_redis_cluster_pool(tx->_cluster, tx->_slot)) == NULL) {
        /* no owner known: the map is being refreshed */
        if (!redirected(tx, err))
            finish(tx, SK_REDIS_OPTIMISTIC_FAILED, err);
        return;
    }
    sk_redis_conn_t *conn;
    if ((err = sk_redis_pool_lease(tx->pool, &tx->_lease, &tx->super, on_leased, &conn)) != NULL) {
        if (!(err == sk_redis_err_unavailable && redirected(tx, err)))
            finish(tx, SK_REDIS_OPTIMISTIC_FAILED, err);
    } else if (conn != NULL) {
        /* leased at once: on_leased will not run */
        tx->_conn = conn;
        start_attempt(tx);
    }
    /* else queued: on_leased follows */
}

static void on_gate(sk_op_t *op, sk_redis_gate_entry_t *entry, const char *errstr)
{
    sk_redis_optimistic_t *tx = tx_of(op);
    (void)entry;
    if (errstr != NULL)
        finish(tx, SK_REDIS_OPTIMISTIC_BUSY, errstr);
    else
        lease(tx);
}

void sk_redis_optimistic_init(sk_redis_optimistic_t *tx, sk_loop_t *loop, sk_redis_pool_t *pool,
                              const sk_redis_optimistic_callbacks_t *cb, unsigned tries, sk_redis_cmd_t *watch,
                              sk_redis_cmd_t **reads, size_t nreads)
{
    *tx = (sk_redis_optimistic_t){
        .loop = loop, .pool = pool, .cb = cb, .tries = tries, .watch = watch, .reads = reads, .nreads = nreads};
    tx->read_replies = h2o_mem_alloc((nreads + 1) * sizeof(*tx->read_replies));
    memset(tx->read_replies, 0, (nreads + 1) * sizeof(*tx->read_replies));
}

void sk_redis_optimistic_set_cluster(sk_redis_optimistic_t *tx, sk_redis_cluster_t *cluster, int slot)
{
    tx->_cluster = cluster;
    tx->_slot = slot;
}

void sk_redis_optimistic_start(sk_redis_optimistic_t *tx, const char *gate_key, size_t gate_keylen, unsigned gate_width)
{
    if (gate_key == NULL) {
        lease(tx);
        return;
    }
    sk_redis_gate_limits_t limits = {
        .width = gate_width, .queue = sk_redis_optimistic_config.gate_queue, .wait_ms = sk_redis_optimistic_config.gate_wait_ms};
    const char *err;
    if ((err = sk_redis_gate_enter(tx->loop, &tx->_gate, &tx->super, gate_key, gate_keylen, &limits, on_gate)) != NULL)
        finish(tx, SK_REDIS_OPTIMISTIC_BUSY, err); /* the gate's queue is full: sk_redis_err_busy */
    else if (sk_redis_gate_is_held(&tx->_gate))
        lease(tx); /* entered at once: on_gate will not run */
    else
        tx->state = SK_REDIS_OPTIMISTIC_GATING; /* queued: on_gate follows */
}

/* ===== step 1: WATCH + declared reads, pipelined ===== */

static int send_cmd(sk_redis_optimistic_t *tx, const sk_redis_cmd_t *c, sk_redis_reply_cb cb)
{
    if (sk_redis_conn_command(tx->_conn, &tx->super, c->argc, c->argv, c->lens, cb) != NULL)
        return -1;
    ++tx->_inflight;
    return 0;
}

/* a send failed because the connection is closing: the replies of what was already sent fail too, so finish only
 * once they are in (or now, if none is) */
static void fail_broken(sk_redis_optimistic_t *tx)
{
    if (tx->_inflight == 0) {
        finish(tx, SK_REDIS_OPTIMISTIC_FAILED, sk_redis_err_closed);
    } else {
        tx->_awaiting = tx->_got + tx->_inflight;
        tx->errstr = sk_redis_err_closed;
    }
}

static void on_fn_step(sk_deferred_t *d)
{
    sk_redis_optimistic_t *tx = H2O_STRUCT_FROM_MEMBER(sk_redis_optimistic_t, _step, d);
    tx->cb->on_fn(tx);
}

static void on_read_reply(sk_op_t *op, redisReply *reply, const char *errstr)
{
    sk_redis_optimistic_t *tx = tx_of(op);
    if (is_stale(tx, SK_REDIS_OPTIMISTIC_READING))
        return;
    size_t idx = tx->_got++;
    int kind = tx->_cluster != NULL ? sk_redis_route_note_redirect(tx->_cluster, reply) : SK_REDIS_REDIRECT_NONE;
    if (kind != SK_REDIS_REDIRECT_NONE) {
        if (tx->_redirect == SK_REDIS_REDIRECT_NONE)
            tx->_redirect = kind; /* the attempt is abandoned once every reply is in */
    } else if (reply == NULL) {
        if (tx->errstr == NULL)
            tx->errstr = errstr;
    } else if (tx->watch != NULL && idx == 0) {
        if (reply->type == REDIS_REPLY_ERROR && tx->errstr == NULL)
            tx->errstr = sk_redis_err_watch_failed;
    } else {
        tx->read_replies[idx - (tx->watch != NULL)] = sk_redis_reply_dup(reply);
    }
    if (tx->_got != tx->_awaiting)
        return;
    if (tx->_redirect && tx->errstr == NULL && redirected(tx, NULL))
        return;
    if (tx->errstr != NULL) {
        finish(tx, SK_REDIS_OPTIMISTIC_FAILED, NULL);
        return;
    }
    tx->state = SK_REDIS_OPTIMISTIC_FN;
    sk_loop_defer(tx->loop, &tx->_step, on_fn_step);
}

static void clear_attempt(sk_redis_optimistic_t *tx)
{
    for (size_t i = 0; i != tx->nreads; ++i)
        if (tx->read_replies[i] != NULL) {
            freeReplyObject(tx->read_replies[i]);
            tx->read_replies[i] = NULL;
        }
    for (size_t i = 0; i != tx->_writes.size; ++i)
        free(tx->_writes.entries[i]);
    tx->_writes.size = 0;
    if (tx->call_reply != NULL) {
        freeReplyObject(tx->call_reply);
        tx->call_reply = NULL;
    }
}

static void start_attempt(sk_redis_optimistic_t *tx)
{
    ++tx->attempt;
    sk_counter_inc(sk_redis_metrics.tx_attempts);
    clear_attempt(tx);
    tx->state = SK_REDIS_OPTIMISTIC_READING;
    tx->_got = 0;
    tx->_awaiting = (tx->watch != NULL) + tx->nreads;
    tx->errstr = NULL;
    if (tx->_awaiting == 0) {
        tx->state = SK_REDIS_OPTIMISTIC_FN;
        sk_loop_defer(tx->loop, &tx->_step, on_fn_step);
        return;
    }
    if (tx->watch != NULL) {
        tx->_dirty |= SK_REDIS_DIRTY_WATCH; /* before sending: a reply lost to a broken connection still counts */
        if (send_cmd(tx, tx->watch, on_read_reply) != 0)
            goto Broken;
    }
    for (size_t i = 0; i != tx->nreads; ++i)
        if (send_cmd(tx, tx->reads[i], on_read_reply) != 0)
            goto Broken;
    return;
Broken:
    fail_broken(tx);
}

/* ===== step 2: fn's turns ===== */

static void on_call_step(sk_deferred_t *d)
{
    sk_redis_optimistic_t *tx = H2O_STRUCT_FROM_MEMBER(sk_redis_optimistic_t, _step, d);
    tx->cb->on_call(tx);
}

static void on_call_reply(sk_op_t *op, redisReply *reply, const char *errstr)
{
    sk_redis_optimistic_t *tx = tx_of(op);
    if (is_stale(tx, SK_REDIS_OPTIMISTIC_CALLING))
        return;
    tx->call_reply = reply != NULL ? sk_redis_reply_dup(reply) : NULL;
    tx->call_err = errstr;
    tx->state = SK_REDIS_OPTIMISTIC_FN;
    sk_loop_defer(tx->loop, &tx->_step, on_call_step);
}

int sk_redis_optimistic_call(sk_redis_optimistic_t *tx, const sk_redis_cmd_t *cmd)
{
    if (send_cmd(tx, cmd, on_call_reply) != 0)
        return -1;
    tx->state = SK_REDIS_OPTIMISTIC_CALLING;
    return 0;
}

size_t sk_redis_optimistic_queue(sk_redis_optimistic_t *tx, sk_redis_cmd_t *cmd)
{
    h2o_vector_reserve(NULL, &tx->_writes, tx->_writes.size + 1);
    tx->_writes.entries[tx->_writes.size++] = cmd;
    return tx->_writes.size;
}

void sk_redis_optimistic_fn_failed(sk_redis_optimistic_t *tx, const char *msg)
{
    tx->errmsg = h2o_strdup(NULL, msg, SIZE_MAX).base;
    finish(tx, SK_REDIS_OPTIMISTIC_FN_ERROR, NULL);
}

/* ===== step 3: MULTI, writes, EXEC; a conflict pauses and starts a new attempt ===== */

static void on_exec_reply(sk_op_t *op, redisReply *reply, const char *errstr);

void sk_redis_optimistic_fn_done(sk_redis_optimistic_t *tx)
{
    if (tx->_writes.size == 0) {
        finish(tx, SK_REDIS_OPTIMISTIC_READONLY, NULL); /* the pool UNWATCHes */
        return;
    }
    static const char *multi_argv[] = {"MULTI"}, *exec_argv[] = {"EXEC"};
    static size_t multi_len[] = {5}, exec_len[] = {4};
    static const sk_redis_cmd_t multi = {1, multi_argv, multi_len}, exec = {1, exec_argv, exec_len};
    tx->state = SK_REDIS_OPTIMISTIC_EXEC;
    tx->_got = 0;
    tx->_awaiting = tx->_writes.size + 2;
    tx->errstr = NULL;
    tx->_dirty |= SK_REDIS_DIRTY_MULTI;
    if (send_cmd(tx, &multi, on_exec_reply) != 0)
        goto Broken;
    for (size_t i = 0; i != tx->_writes.size; ++i)
        if (send_cmd(tx, tx->_writes.entries[i], on_exec_reply) != 0)
            goto Broken;
    if (send_cmd(tx, &exec, on_exec_reply) != 0)
        goto Broken;
    return;
Broken:
    fail_broken(tx);
}

static uint64_t next_random(void)
{
    if (rng_state == 0)
        rng_state = sk_now_ms() * 0x9E3779B97F4A7C15ull + (uintptr_t)&rng_state;
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void on_backoff(sk_timer_t *timer)
{
    sk_redis_optimistic_t *tx = H2O_STRUCT_FROM_MEMBER(sk_redis_optimistic_t, _backoff, timer);
    start_attempt(tx);
}

static void on_exec_reply(sk_op_t *op, redisReply *reply, const char *errstr)
{
    sk_redis_optimistic_t *tx = tx_of(op);
    if (is_stale(tx, SK_REDIS_OPTIMISTIC_EXEC))
        return;
    int last = ++tx->_got == tx->_awaiting;
    int kind = tx->_cluster != NULL ? sk_redis_route_note_redirect(tx->_cluster, reply) : SK_REDIS_REDIRECT_NONE;
    if (kind != SK_REDIS_REDIRECT_NONE && tx->_redirect == SK_REDIS_REDIRECT_NONE)
        tx->_redirect = kind; /* a queued write redirected: EXEC answers EXECABORT, and the attempt starts over */
    if (reply == NULL) {
        if (tx->errstr == NULL)
            tx->errstr = errstr;
    } else if (last && tx->errstr == NULL) {
        tx->exec_reply = sk_redis_reply_dup(reply);
    }
    if (!last)
        return;
    if (tx->errstr != NULL) {
        finish(tx, SK_REDIS_OPTIMISTIC_FAILED, NULL);
        return;
    }
    /* EXEC ended both the MULTI and the WATCHes, whatever it answered */
    tx->_dirty = 0;
    if (tx->_redirect && redirected(tx, NULL))
        return;
    redisReply *r = tx->exec_reply;
    if (r->type == REDIS_REPLY_NIL) {
        /* a null multi-bulk: a WATCHed key changed. (EXECABORT, a queueing error, is an error reply instead and is
         * never retried.) */
        freeReplyObject(r);
        tx->exec_reply = NULL;
        sk_counter_inc(sk_redis_metrics.tx_conflicts);
        if (tx->attempt >= tx->tries) {
            finish(tx, SK_REDIS_OPTIMISTIC_CONFLICT, sk_redis_err_conflict);
            return;
        }
        /* fn reruns with fresh reads, after a jittered exponential pause (full jitter) */
        tx->state = SK_REDIS_OPTIMISTIC_BACKOFF;
        unsigned shift = tx->attempt - 1 < 10 ? tx->attempt - 1 : 10;
        uint64_t cap_us = 1000ull << shift, max_ms = sk_redis_gate_is_held(&tx->_gate)
                                                         ? sk_redis_optimistic_config.gate_backoff_max_ms
                                                         : sk_redis_optimistic_config.backoff_max_ms;
        if (cap_us > max_ms * 1000ull)
            cap_us = max_ms * 1000ull;
        uint64_t delay_us = next_random() % (cap_us + 1);
        sk_timer_start(tx->loop, &tx->_backoff, delay_us / 1000, on_backoff);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        tx->errmsg = h2o_strdup(NULL, r->str, r->len).base;
        finish(tx, SK_REDIS_OPTIMISTIC_EXEC_ERROR, NULL);
        return;
    }
    finish(tx, SK_REDIS_OPTIMISTIC_EXECUTED, NULL);
}

/* ===== a cluster's redirection: the attempt starts over on the slot's owner ===== */

static void on_redirect_pause(sk_timer_t *timer)
{
    sk_redis_optimistic_t *tx = H2O_STRUCT_FROM_MEMBER(sk_redis_optimistic_t, _backoff, timer);
    lease(tx);
}

/* the attempt was redirected (every reply in), or its master cannot be reached (errstr): hands the connection back
 * and leases again, on the owner the map names now. 0 if the transaction cannot go on that way (no cluster, or the
 * redirections are spent: the caller finishes it). A MOVED was applied to the map when its reply came. */
static int redirected(sk_redis_optimistic_t *tx, const char *errstr)
{
    if (tx->_cluster == NULL)
        return 0;
    int moved = tx->_redirect == SK_REDIS_REDIRECT_MOVED && errstr == NULL;
    tx->_redirect = SK_REDIS_REDIRECT_NONE;
    if (tx->exec_reply != NULL) {
        freeReplyObject(tx->exec_reply); /* the EXECABORT of a redirected write */
        tx->exec_reply = NULL;
    }
    if (++tx->_redirects >= SK_REDIS_ROUTE_TRIES) {
        finish(tx, SK_REDIS_OPTIMISTIC_FAILED, errstr != NULL ? errstr : sk_redis_err_redirects);
        return 1;
    }
    if (tx->_conn != NULL) {
        sk_redis_pool_release(tx->pool, tx->_conn, tx->_dirty);
        tx->_conn = NULL;
        tx->_dirty = 0;
    }
    clear_attempt(tx);
    tx->errstr = NULL;
    sk_counter_inc(sk_redis_metrics.cluster_retries);
    sk_redis_cluster_refresh(tx->_cluster);
    /* from the loop, never inside the hiredis callback of the connection just handed back */
    tx->state = SK_REDIS_OPTIMISTIC_BACKOFF;
    uint64_t pause = moved ? 0 : (uint64_t)SK_REDIS_ROUTE_BACKOFF_MS << (tx->_redirects - 1);
    sk_timer_start(tx->loop, &tx->_backoff, pause, on_redirect_pause);
    return 1;
}

/* ===== the end ===== */

static void free_if_unreachable(sk_redis_optimistic_t *tx)
{
    if (tx->state != SK_REDIS_OPTIMISTIC_DONE || tx->_inflight != 0 || !tx->_released)
        return;
    clear_attempt(tx);
    free(tx->_writes.entries);
    if (tx->exec_reply != NULL)
        freeReplyObject(tx->exec_reply);
    free(tx->watch);
    for (size_t i = 0; i != tx->nreads; ++i)
        free(tx->reads[i]);
    free(tx->reads);
    free(tx->read_replies);
    free(tx->errmsg);
    tx->cb->on_free(tx);
}

/* a reply came back: 1 if the transaction has moved on since its command was sent (the reply only counts) */
static int is_stale(sk_redis_optimistic_t *tx, sk_redis_optimistic_state_t expected)
{
    --tx->_inflight;
    if (tx->state == expected)
        return 0;
    free_if_unreachable(tx);
    return 1;
}

/* ends the transaction: the connection goes back (cleaned by the pool if dirty), the gate is left, then the owner
 * hears of it */
static void finish(sk_redis_optimistic_t *tx, sk_redis_optimistic_result_t result, const char *errstr)
{
    tx->state = SK_REDIS_OPTIMISTIC_DONE;
    tx->result = result;
    if (errstr != NULL)
        tx->errstr = errstr;
    sk_timer_stop(tx->loop, &tx->_backoff);
    sk_loop_cancel_defer(&tx->_step);
    sk_redis_lease_cancel(&tx->_lease);
    if (tx->_conn != NULL) {
        sk_redis_pool_release(tx->pool, tx->_conn, tx->_dirty);
        tx->_conn = NULL;
    }
    sk_redis_gate_leave(&tx->_gate); /* every exit passes here: success, conflicts, errors, fn's error, a release */
    switch (result) {
    case SK_REDIS_OPTIMISTIC_EXECUTED:
        sk_counter_inc(sk_redis_metrics.tx_ok);
        sk_histogram_observe(sk_redis_metrics.tx_retries, tx->attempt - 1);
        break;
    case SK_REDIS_OPTIMISTIC_READONLY:
        sk_counter_inc(sk_redis_metrics.tx_readonly);
        break;
    case SK_REDIS_OPTIMISTIC_CONFLICT:
        sk_counter_inc(sk_redis_metrics.tx_conflict);
        break;
    case SK_REDIS_OPTIMISTIC_BUSY:
        sk_counter_inc(sk_redis_metrics.tx_busy);
        break;
    default:
        sk_counter_inc(sk_redis_metrics.tx_error);
        break;
    }
    if (tx->_released)
        free_if_unreachable(tx);
    else
        tx->cb->on_done(&tx->super, result, tx->errstr);
}

void sk_redis_optimistic_release(sk_redis_optimistic_t *tx)
{
    tx->_released = 1;
    if (tx->state != SK_REDIS_OPTIMISTIC_DONE)
        finish(tx, SK_REDIS_OPTIMISTIC_FAILED, sk_redis_err_closed);
    else
        free_if_unreachable(tx);
}
