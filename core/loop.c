#include <stdlib.h>
#include <time.h>
#include <inttypes.h>
#include <stdio.h>
#include "log.h"
#include "loop.h"
#include "metrics.h"

static __thread sk_loop_t *current_loop;

uint64_t sk_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

sk_loop_t *sk_loop_current(void)
{
    return current_loop;
}

void sk_loop_init(sk_loop_t *loop, unsigned id, h2o_evloop_t *evloop, h2o_multithread_queue_t *queue)
{
    *loop = (sk_loop_t){.evloop = evloop != NULL ? evloop : h2o_evloop_create(), .id = id};
    if (queue != NULL) {
        loop->queue = queue;
        loop->queue_is_borrowed = 1;
    } else {
        loop->queue = h2o_multithread_create_queue(loop->evloop);
    }
    h2o_linklist_init_anchor(&loop->deferred);
    char labels[32];
    snprintf(labels, sizeof(labels), "loop=\"%u\"", id);
    loop->stalls.counter = sk_metrics_counter(
        "seckilld_loop_stalls_total",
        "Event loop iterations whose due timers ran 200 ms or more late: the thread was held (a callback, a script, the machine)",
        labels);
    sk_loop_bind(loop);
}

void sk_loop_bind(sk_loop_t *loop)
{
    current_loop = loop;
}

void sk_loop_dispose(sk_loop_t *loop)
{
    if (!loop->queue_is_borrowed)
        h2o_multithread_destroy_queue(loop->queue);
    free(loop->timers.heap);
    if (current_loop == loop)
        current_loop = NULL;
}

/* ===== timer heap (min-heap on `at`, each timer remembers its slot so it can be removed) ===== */

static void heap_set(sk_loop_t *loop, size_t i, sk_timer_t *t)
{
    loop->timers.heap[i] = t;
    t->_slot = i + 1;
}

static void sift_up(sk_loop_t *loop, size_t i)
{
    sk_timer_t *t = loop->timers.heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (loop->timers.heap[parent]->at <= t->at)
            break;
        heap_set(loop, i, loop->timers.heap[parent]);
        i = parent;
    }
    heap_set(loop, i, t);
}

static void sift_down(sk_loop_t *loop, size_t i)
{
    sk_timer_t *t = loop->timers.heap[i];
    size_t n = loop->timers.size;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && loop->timers.heap[child + 1]->at < loop->timers.heap[child]->at)
            ++child;
        if (t->at <= loop->timers.heap[child]->at)
            break;
        heap_set(loop, i, loop->timers.heap[child]);
        i = child;
    }
    heap_set(loop, i, t);
}

void sk_timer_stop(sk_loop_t *loop, sk_timer_t *timer)
{
    if (timer->_slot == 0)
        return;
    size_t i = timer->_slot - 1;
    timer->_slot = 0;
    sk_timer_t *last = loop->timers.heap[--loop->timers.size];
    if (i == loop->timers.size)
        return;
    heap_set(loop, i, last);
    sift_down(loop, i);
    sift_up(loop, last->_slot - 1);
}

void sk_timer_start(sk_loop_t *loop, sk_timer_t *timer, uint64_t delay_ms, sk_timer_cb cb)
{
    sk_timer_stop(loop, timer);
    timer->at = sk_now_ms() + delay_ms;
    timer->cb = cb;
    if (loop->timers.size == loop->timers.capacity) {
        loop->timers.capacity = loop->timers.capacity ? loop->timers.capacity * 2 : 64;
        loop->timers.heap = h2o_mem_realloc(loop->timers.heap, loop->timers.capacity * sizeof(*loop->timers.heap));
    }
    heap_set(loop, loop->timers.size++, timer);
    sift_up(loop, loop->timers.size - 1);
}

/* A due timer runs late by as long as the iteration before held the thread; one late by a stall's length means no
 * reply, request or timeout was served meanwhile. Said once a second at most, so a loop that stays held cannot flood
 * the log. */
static void note_lateness(sk_loop_t *loop, uint64_t now, uint64_t late)
{
    if (late < SK_LOOP_STALL_MS)
        return;
    ++loop->stalls.count;
    sk_counter_inc(loop->stalls.counter);
    if (late > loop->stalls.worst_ms)
        loop->stalls.worst_ms = late;
    if (now - loop->stalls.logged_at >= 1000) {
        loop->stalls.logged_at = now;
        sk_log(SK_LOG_WARN, "event loop held for %" PRIu64 " ms: timers ran late (%" PRIu64 " stalls so far)", late,
               loop->stalls.count);
    }
}

static void run_timers(sk_loop_t *loop)
{
    uint64_t now = sk_now_ms();
    if (loop->timers.size != 0 && loop->timers.heap[0]->at < now)
        note_lateness(loop, now, now - loop->timers.heap[0]->at);
    while (loop->timers.size != 0 && loop->timers.heap[0]->at <= now) {
        sk_timer_t *t = loop->timers.heap[0];
        sk_timer_stop(loop, t);
        t->cb(t);
    }
}

/* ===== deferred callbacks ===== */

void sk_loop_defer(sk_loop_t *loop, sk_deferred_t *deferred, sk_deferred_cb cb)
{
    deferred->cb = cb;
    if (!h2o_linklist_is_linked(&deferred->_link))
        h2o_linklist_insert(&loop->deferred, &deferred->_link);
}

void sk_loop_cancel_defer(sk_deferred_t *deferred)
{
    if (h2o_linklist_is_linked(&deferred->_link))
        h2o_linklist_unlink(&deferred->_link);
}

static void run_deferred(sk_loop_t *loop)
{
    /* entries queued while running go to the next iteration, so a callback that defers itself cannot starve I/O */
    h2o_linklist_t batch;
    h2o_linklist_init_anchor(&batch);
    h2o_linklist_insert_list(&batch, &loop->deferred);
    while (!h2o_linklist_is_empty(&batch)) {
        sk_deferred_t *d = H2O_STRUCT_FROM_MEMBER(sk_deferred_t, _link, batch.next);
        h2o_linklist_unlink(&d->_link);
        d->cb(d);
    }
}

void sk_loop_run_once(sk_loop_t *loop)
{
    int32_t max_wait = INT32_MAX;
    h2o_evloop_t *ev = loop->evloop;
    /* A deferred callback that wrote a response (a resumed coroutine) leaves the socket on h2o's pending or
     * state-changed lists; h2o serves those only inside its next run, which would otherwise sleep in epoll until
     * some unrelated event arrives. */
    if (!h2o_linklist_is_empty(&loop->deferred) || ev->_pending_as_client != NULL || ev->_pending_as_server != NULL ||
        ev->_statechanged.head != NULL) {
        max_wait = 0;
    } else if (loop->timers.size != 0) {
        uint64_t now = sk_now_ms(), at = loop->timers.heap[0]->at;
        max_wait = at <= now ? 0 : at - now > INT32_MAX ? INT32_MAX : (int32_t)(at - now);
    }
    h2o_evloop_run(loop->evloop, max_wait);
    run_timers(loop);
    run_deferred(loop);
}
