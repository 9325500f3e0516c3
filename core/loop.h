/*
 * loop.h: the per-thread event loop every worker and the consumer run.
 *
 * It wraps an h2o evloop and adds what h2o 2.2.5 lacks: timers of any duration (a min-heap whose next
 * deadline bounds h2o_evloop_run's wait) and a deferred-callback list that runs after the current
 * iteration. Library callbacks (hiredis, MariaDB, Kafka) never resume Lua directly; they defer, and the
 * loop resumes from here, outside any library's call stack.
 */
#ifndef SK_LOOP_H
#define SK_LOOP_H

#define H2O_USE_LIBUV 0
#include <stdint.h>
#include <h2o.h>

typedef struct st_sk_loop_t sk_loop_t;
typedef struct st_sk_timer_t sk_timer_t;
typedef struct st_sk_deferred_t sk_deferred_t;

typedef void (*sk_timer_cb)(sk_timer_t *timer);
typedef void (*sk_deferred_cb)(sk_deferred_t *deferred);

/** a one-shot timer; embed it and recover the owner with H2O_STRUCT_FROM_MEMBER */
struct st_sk_timer_t {
    uint64_t at;
    sk_timer_cb cb;
    size_t _slot; /* heap index + 1; 0 when not armed */
};

/** a callback queued to run on the loop after the current iteration */
struct st_sk_deferred_t {
    h2o_linklist_t _link;
    sk_deferred_cb cb;
};

struct st_sk_loop_t {
    h2o_evloop_t *evloop;
    /** cross-thread messages to this loop (h2o's mutex + pipe queue) */
    h2o_multithread_queue_t *queue;
    /** true when the queue is owned by an h2o_context_t (which disposes it) */
    int queue_is_borrowed;
    struct {
        sk_timer_t **heap;
        size_t size, capacity;
    } timers;
    h2o_linklist_t deferred;
    /** a small integer naming the thread in metrics: workers 0..N-1, the consumer N */
    unsigned id;
    /** stalls: iterations whose first due timer ran SK_LOOP_STALL_MS or more after its deadline (something held the
     * thread: a callback, a script, the kernel), the worst lateness seen, and when one was last logged */
    struct {
        uint64_t count, worst_ms, logged_at;
        struct st_sk_counter_t *counter; /* seckilld_loop_stalls_total{loop="id"} */
    } stalls;
};

/** a timer this late means the loop was held: logged (at most once a second per loop) and counted */
#define SK_LOOP_STALL_MS 200

/** current monotonic time in milliseconds */
uint64_t sk_now_ms(void);

/** the loop of the calling thread, or NULL on a thread that runs none */
sk_loop_t *sk_loop_current(void);

/** creates the evloop and, if queue is NULL, a multithread queue of its own; binds the loop to the calling thread */
void sk_loop_init(sk_loop_t *loop, unsigned id, h2o_evloop_t *evloop, h2o_multithread_queue_t *queue);
/** binds an initialised loop to the calling thread (sk_loop_current) */
void sk_loop_bind(sk_loop_t *loop);
/** releases what sk_loop_init created */
void sk_loop_dispose(sk_loop_t *loop);

/** runs one iteration: waits for I/O at most until the next timer (not at all if work is deferred), then runs
 * expired timers and the deferred callbacks */
void sk_loop_run_once(sk_loop_t *loop);

/** arms (or re-arms) a timer to fire after delay_ms */
void sk_timer_start(sk_loop_t *loop, sk_timer_t *timer, uint64_t delay_ms, sk_timer_cb cb);
/** disarms a timer; harmless if it is not armed */
void sk_timer_stop(sk_loop_t *loop, sk_timer_t *timer);
static inline int sk_timer_is_active(const sk_timer_t *timer)
{
    return timer->_slot != 0;
}

/** queues cb to run after the current iteration; a deferred entry already queued is not queued twice */
void sk_loop_defer(sk_loop_t *loop, sk_deferred_t *deferred, sk_deferred_cb cb);
/** removes a queued deferred entry; harmless if it is not queued */
void sk_loop_cancel_defer(sk_deferred_t *deferred);

#endif
