/*
 * optimistic.h: an optimistic transaction's state machine, without Lua: (gate ->) lease -> WATCH + reads -> fn ->
 * MULTI + writes + EXEC, retried on a fresh attempt when EXEC finds a WATCHed key changed. lua_tx.c gives it its Lua
 * face (redis.optimistic); fn is whatever the owner runs between the reads and the writes.
 *
 *   GATING -> LEASING -> READING -> FN <-> CALLING
 *                           ^        |
 *                           |        v
 *                        BACKOFF <- EXEC -> DONE        (any state -> DONE on an error, a refusal, a release)
 *
 * The machine runs from hiredis callbacks, a backoff timer and deferred steps; fn's turns (on_fn, on_call) always
 * come from the loop, never inside hiredis. A broken connection fails the attempt: WATCH state lives in the
 * connection, so an attempt never continues on another one. Every exit hands the connection back with what it may
 * still hold (SK_REDIS_DIRTY_*; the pool DISCARDs/UNWATCHes it before anyone else gets it) and leaves the gate.
 *
 * On a Redis Cluster (sk_redis_optimistic_set_cluster) the connection is leased from the master of the
 * transaction's slot. A redirection in an attempt (a MOVED, ASK, TRYAGAIN or CLUSTERDOWN answering the WATCH, a
 * read or a queued write), or a master that cannot be reached, abandons the attempt: the connection goes back, the
 * map is updated (MOVED) or refreshed, and the transaction starts again from the lease, on the slot's owner now,
 * after a pause (none after a MOVED), SK_REDIS_ROUTE_TRIES times at most; then it fails "too many redirections"
 * (or "redis unavailable").
 */
#ifndef SK_REDIS_OPTIMISTIC_H
#define SK_REDIS_OPTIMISTIC_H

#include "cluster.h"
#include "cmd.h"
#include "gate.h"
#include "pool.h"

typedef struct st_sk_redis_optimistic_t sk_redis_optimistic_t;

/** the process-wide settings (redis.tries and friends, read by lua_tx.c at start-up) */
typedef struct st_sk_redis_optimistic_config_t {
    /** attempts when the owner asks for none (redis.tries) */
    unsigned tries;
    /** cap of the jittered pause between attempts (redis.backoff_max_ms), and the same while holding a gate
     * (redis.gate_backoff_max_ms) */
    unsigned backoff_max_ms, gate_backoff_max_ms;
    /** the gate's limits (redis.gate_wait_ms, redis.gate_queue); the width is per transaction */
    uint64_t gate_wait_ms;
    size_t gate_queue;
} sk_redis_optimistic_config_t;

/** defaults: 16 tries, 64 ms, 2 ms, 1000 ms, 4096 */
extern sk_redis_optimistic_config_t sk_redis_optimistic_config;

typedef enum {
    SK_REDIS_OPTIMISTIC_GATING,  /* queued behind its gate, holding nothing */
    SK_REDIS_OPTIMISTIC_LEASING, /* waiting for a connection */
    SK_REDIS_OPTIMISTIC_READING, /* WATCH and the reads sent */
    SK_REDIS_OPTIMISTIC_FN,      /* fn's turn (on_fn / on_call pending or running) */
    SK_REDIS_OPTIMISTIC_CALLING, /* fn waits for the reply to sk_redis_optimistic_call */
    SK_REDIS_OPTIMISTIC_EXEC,    /* MULTI, the writes and EXEC sent */
    SK_REDIS_OPTIMISTIC_BACKOFF, /* a conflict: pausing before the next attempt */
    SK_REDIS_OPTIMISTIC_DONE
} sk_redis_optimistic_state_t;

typedef enum {
    SK_REDIS_OPTIMISTIC_EXECUTED,   /* EXEC ran: exec_reply */
    SK_REDIS_OPTIMISTIC_READONLY,   /* fn queued nothing: no MULTI was sent */
    SK_REDIS_OPTIMISTIC_CONFLICT,   /* every try found a WATCHed key changed: errstr is sk_redis_err_conflict */
    SK_REDIS_OPTIMISTIC_FAILED,     /* no reply (I/O, lease, WATCH refused): errstr, one of sk_redis_err_* */
    SK_REDIS_OPTIMISTIC_EXEC_ERROR, /* EXECABORT: a queued command was malformed; errmsg is Redis's message */
    SK_REDIS_OPTIMISTIC_FN_ERROR,   /* sk_redis_optimistic_fn_failed: errmsg */
    SK_REDIS_OPTIMISTIC_BUSY        /* refused by its gate: errstr is sk_redis_err_busy */
} sk_redis_optimistic_result_t;

/** what the owner supplies */
typedef struct st_sk_redis_optimistic_callbacks_t {
    /** fn's turn in a new attempt, from the loop: the reads are in tx->read_replies. The owner may call
     * sk_redis_optimistic_call and _queue, and ends fn with sk_redis_optimistic_fn_done or _fn_failed, now or in a
     * later on_call. */
    void (*on_fn)(sk_redis_optimistic_t *tx);
    /** the answer to sk_redis_optimistic_call, from the loop: tx->call_reply (take it: set it to NULL, free it with
     * freeReplyObject) or, if NULL, tx->call_err */
    void (*on_call)(sk_redis_optimistic_t *tx);
    /** the completion (core/op.h's shape): the transaction ended with result (also tx->result; op is &tx->super),
     * errstr NULL or one of sk_redis_err_* (also tx->errstr), unless the owner released it first. May run inside
     * sk_redis_optimistic_start, inside a hiredis callback or from the loop: never free tx here (release it). */
    void (*on_done)(sk_op_t *op, sk_redis_optimistic_result_t result, const char *errstr);
    /** after sk_redis_optimistic_release, once no callback can reach tx any more: free the memory tx lives in */
    void (*on_free)(sk_redis_optimistic_t *tx);
} sk_redis_optimistic_callbacks_t;

struct st_sk_redis_optimistic_t {
    /** the transaction is the op of core/op.h (first): its replies, lease and gate complete with it, and the owner's
     * coroutine parks on it (the owner sets super.co after sk_redis_optimistic_init) */
    sk_op_t super;
    sk_loop_t *loop;
    sk_redis_pool_t *pool;
    const sk_redis_optimistic_callbacks_t *cb;
    /** attempts at most */
    unsigned tries;
    /** WATCH keys... (NULL: no keys) and the reads of every attempt; owned */
    sk_redis_cmd_t *watch, **reads;
    size_t nreads;
    sk_redis_optimistic_state_t state;
    /** the attempt running, 1 for the first */
    unsigned attempt;
    /** this attempt's read replies (nreads of them, in on_fn) */
    redisReply **read_replies;
    /** the answer to sk_redis_optimistic_call (in on_call) */
    redisReply *call_reply;
    const char *call_err;
    /** once DONE: the outcome and its details */
    sk_redis_optimistic_result_t result;
    redisReply *exec_reply;
    const char *errstr;
    char *errmsg;
    /* private */
    sk_redis_lease_t _lease;
    sk_redis_conn_t *_conn;
    int _dirty, _released;
    size_t _awaiting, _got, _inflight;
    H2O_VECTOR(sk_redis_cmd_t *) _writes;
    sk_redis_gate_entry_t _gate;
    sk_redis_cluster_t *_cluster;
    int _slot, _redirect;
    unsigned _redirects;
    sk_timer_t _backoff;
    sk_deferred_t _step;
};

/** prepares a transaction; it takes watch (NULL: none), reads (an array of nreads malloc'd commands, itself malloc'd)
 * and sends nothing yet */
void sk_redis_optimistic_init(sk_redis_optimistic_t *tx, sk_loop_t *loop, sk_redis_pool_t *pool,
                              const sk_redis_optimistic_callbacks_t *cb, unsigned tries, sk_redis_cmd_t *watch,
                              sk_redis_cmd_t **reads, size_t nreads);
/** makes the transaction run on the master of slot (0..16383, or SK_REDIS_SLOT_NONE: any) of cluster; before start
 * (the pool given to init is then not used) */
void sk_redis_optimistic_set_cluster(sk_redis_optimistic_t *tx, sk_redis_cluster_t *cluster, int slot);
/** starts it: through the gate of gate_key (len bytes, copied; NULL: no gate) with gate_width holders at most,
 * then a leased connection. It may end at once (state DONE, on_done called inside this call). */
void sk_redis_optimistic_start(sk_redis_optimistic_t *tx, const char *gate_key, size_t gate_keylen, unsigned gate_width);

/** fn reads more on the watched connection (state FN only): 0 when sent (state CALLING; on_call follows), -1 when
 * the connection is closing (nothing sent; fn may go on) */
int sk_redis_optimistic_call(sk_redis_optimistic_t *tx, const sk_redis_cmd_t *cmd);
/** fn queues a write for the MULTI block (state FN only); takes cmd; returns how many are queued */
size_t sk_redis_optimistic_queue(sk_redis_optimistic_t *tx, sk_redis_cmd_t *cmd);
/** fn returned: without writes the transaction ends READONLY; with writes MULTI, the writes and EXEC go out */
void sk_redis_optimistic_fn_done(sk_redis_optimistic_t *tx);
/** fn failed: the transaction ends FN_ERROR with a copy of msg as errmsg */
void sk_redis_optimistic_fn_failed(sk_redis_optimistic_t *tx, const char *msg);

/** the owner is done with tx: one still running ends FAILED ("connection closed") without on_done; what the
 * machine holds is freed and on_free(tx) follows once no reply can reach tx (at once, or at the last reply) */
void sk_redis_optimistic_release(sk_redis_optimistic_t *tx);

#endif
