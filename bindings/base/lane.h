/*
 * lane.h: process-wide coalescing per key. Callers from every loop thread that need the same work done (the take
 * of one item's stock) queue on the key's lane; one of them at a time leads a batch: it claims the entries queued so
 * far, does the work in its own VM, and hands each entry its result, which travels to the entry's loop thread
 * through h2o's multithread queue. At most one batch per key is led at a time in the whole process. No Lua here:
 * payloads and results are strings (Lua values cannot cross VMs); lua_lane.c is the Lua face.
 *
 * Life of a key's lane:
 *   sk_lane_submit   no lane: the caller leads (the lane now exists, empty); otherwise its entry queues (FIFO)
 *   sk_lane_claim    the leader takes up to `max` queued entries into its batch (any number of times)
 *   sk_lane_finish   each claimed entry gets its result; the first entry still queued is promoted to lead the
 *                    next batch (its completion says so), or, with nothing queued, the lane is freed
 * A queued entry's completion runs exactly once on its own loop: led (promoted), a result, "busy" (not claimed
 * within wait_ms: it leaves the queue, nothing was done for it) or "unavailable" (claimed, but no result within
 * bound_ms more: the work may or may not have been done). The mutexes are striped by key and never held across
 * anything but list and state changes; no caller ever blocks.
 */
#ifndef SK_LANE_H
#define SK_LANE_H

#include <stddef.h>
#include "../../core/loop.h"
#include "../../core/op.h"

typedef struct st_sk_lane_t sk_lane_t;
typedef struct st_sk_lane_entry_t sk_lane_entry_t;

extern const char sk_lane_err_busy[];        /* "busy": not taken into a batch in time */
extern const char sk_lane_err_unavailable[]; /* "unavailable": taken, but its answer did not come in time */
extern const char sk_lane_err_failed[];      /* "batch failed": the leader gave no result for the entry */

/** what a queued entry's completion receives (errstr NULL): either the lane to lead, or the batch's result */
typedef struct st_sk_lane_outcome_t {
    /** non-NULL: the entry was promoted; the caller leads the key's next batch (claim, then finish) */
    sk_lane_t *lead;
    /** the result (lead == NULL): owned by the completion from now on (free() it); NULL when the leader gave none,
     * with err saying why (sk_lane_err_failed, or the leader's own constant) */
    char *result;
    size_t len;
    const char *err;
} sk_lane_outcome_t;

/** runs once, on the submitter's loop thread, from the loop (h2o's receiver or a timer): never inside another
 * lane call. errstr NULL: see outcome; else sk_lane_err_busy or sk_lane_err_unavailable. */
typedef void (*sk_lane_cb)(sk_op_t *op, sk_lane_outcome_t *outcome, const char *errstr);

/** a leader's claimed entries: claim fills it, finish empties it */
typedef struct st_sk_lane_batch_t {
    sk_lane_t *lane;
    sk_lane_entry_t **entries;
    size_t n, capacity;
} sk_lane_batch_t;

/** registers the calling loop thread's route (results and promotions reach its entries through loop->queue);
 * before the thread submits */
void sk_lane_thread_init(sk_loop_t *loop);
/** after the thread's coroutines ended: messages still queued to it are settled (a promotion is passed on) */
void sk_lane_thread_dispose(sk_loop_t *loop);

/** frees the routes; once, after every loop thread ended */
void sk_lane_shutdown(void);

/**
 * Starts the coalesced work for key on the calling loop thread, in core/op.h's shape; it cannot fail at once and
 * returns NULL always. When no batch was led for key the caller leads at once (the fast path): *lead is the lane,
 * *entry NULL, and cb never runs (op and cb are unused). Otherwise the caller's entry queued: *lead is NULL, *entry is
 * set (for sk_lane_withdraw), and cb(op, ...) will run exactly once. payload is copied.
 */
const char *sk_lane_submit(sk_loop_t *loop, const char *key, size_t keylen, const char *payload, size_t len, uint64_t wait_ms,
                           uint64_t bound_ms, sk_op_t *op, sk_lane_cb cb, sk_lane_entry_t **entry, sk_lane_t **lead);
/** the submitter went away before its completion ran (its coroutine was abandoned): cb will not run; a promotion
 * on its way to it is passed on to the next entry. Only on the submitter's thread. */
void sk_lane_withdraw(sk_lane_entry_t *entry);

/** moves up to max queued entries of the leader's lane into batch (FIFO); returns how many it added */
size_t sk_lane_claim(sk_lane_t *lane, sk_lane_batch_t *batch, size_t max);
/** the payload of a claimed entry (valid until finish) */
const char *sk_lane_payload(const sk_lane_batch_t *batch, size_t i, size_t *len);
/**
 * Ends the batch: entry i gets a copy of results[i] (lens[i] bytes), or, where results is NULL or results[i] is,
 * no result with err (NULL: sk_lane_err_failed). Then the lane passes to the first queued entry, or is freed.
 * Any thread; the batch is empty afterwards and the leader must not use the lane again.
 */
void sk_lane_finish(sk_lane_batch_t *batch, const char *const *results, const size_t *lens, const char *err);

/** lanes currently led (a gauge for tests and metrics) */
size_t sk_lane_count(void);

#endif
