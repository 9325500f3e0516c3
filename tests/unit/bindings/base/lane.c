/* tests bindings/base/lane.c: one batch per key at a time across threads, every entry answered exactly once with its
 * own result, promotions, the busy and unavailable bounds, withdrawals in every state, and no lane left behind */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../../../bindings/base/lane.h"
#include "../../test.h"

/* h2o 2.2.5 keeps each loop thread's recycled buffers for good (tests/lsan.supp says the same for the server) */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libh2o-evloop.so\n";
}

/* ===== part 1: threads hammering a few keys ===== */

#define NTHREADS 4
#define PER_THREAD 3000
#define NKEYS 3
#define CLAIM_MAX 7

typedef struct st_worker_t worker_t;

typedef struct st_sub_t {
    sk_op_t super;
    worker_t *w;
    int i;
    sk_lane_entry_t *entry;
} sub_t;

/* a batch this thread leads, run 0-1 ms later from its loop (a stand-in for the Redis round trip) */
typedef struct st_lead_t {
    sk_timer_t timer;
    sk_lane_t *lane;
    worker_t *w;
    int i;
} lead_t;

struct st_worker_t {
    pthread_t tid;
    sk_loop_t loop;
    int id, completed, submitted;
    int served[PER_THREAD];
    int wrong, failed;
};

static worker_t workers[NTHREADS];
static _Atomic int leaders[NKEYS], overlaps, batches, batched;

static void payload_of(char *buf, size_t size, int thread, int i)
{
    snprintf(buf, size, "%d:%d:%d", i % NKEYS, thread, i);
}

static void served(worker_t *w, int i, const char *result, size_t len)
{
    char want[64];
    payload_of(want, sizeof(want), w->id, i);
    if (result == NULL || len != strlen(want) + 3 || memcmp(result, "ok:", 3) != 0 || memcmp(result + 3, want, len - 3) != 0)
        ++w->wrong;
    ++w->served[i];
    ++w->completed;
}

static void on_lead_timer(sk_timer_t *t)
{
    lead_t *l = H2O_STRUCT_FROM_MEMBER(lead_t, timer, t);
    sk_lane_batch_t batch = {NULL};
    sk_lane_claim(l->lane, &batch, CLAIM_MAX);
    const char *results[CLAIM_MAX];
    size_t lens[CLAIM_MAX];
    char bufs[CLAIM_MAX][64];
    for (size_t i = 0; i != batch.n; ++i) {
        size_t len;
        const char *p = sk_lane_payload(&batch, i, &len);
        lens[i] = (size_t)snprintf(bufs[i], sizeof(bufs[i]), "ok:%.*s", (int)len, p);
        results[i] = bufs[i];
    }
    atomic_fetch_add(&batches, 1);
    atomic_fetch_add(&batched, (int)batch.n + 1);
    char own[64], res[80];
    payload_of(own, sizeof(own), l->w->id, l->i);
    atomic_fetch_sub(&leaders[l->i % NKEYS], 1);
    sk_lane_finish(&batch, results, lens, NULL);
    snprintf(res, sizeof(res), "ok:%s", own);
    served(l->w, l->i, res, strlen(res));
    free(l);
}

static void start_lead(worker_t *w, sk_lane_t *lane, int i)
{
    if (atomic_fetch_add(&leaders[i % NKEYS], 1) != 0)
        atomic_fetch_add(&overlaps, 1);
    lead_t *l = calloc(1, sizeof(*l));
    *l = (lead_t){.lane = lane, .w = w, .i = i};
    sk_timer_start(&w->loop, &l->timer, (uint64_t)(i % 2), on_lead_timer);
}

static void on_outcome(sk_op_t *op, sk_lane_outcome_t *o, const char *errstr)
{
    sub_t *s = (sub_t *)op;
    if (errstr != NULL) {
        ++s->w->failed;
        ++s->w->completed;
    } else if (o->lead != NULL) {
        start_lead(s->w, o->lead, s->i);
    } else {
        served(s->w, s->i, o->result, o->len);
        free(o->result);
    }
    free(s);
}

static void submit_one(worker_t *w, int i)
{
    char key[16], payload[64];
    snprintf(key, sizeof(key), "key-%d", i % NKEYS);
    payload_of(payload, sizeof(payload), w->id, i);
    sub_t *s = calloc(1, sizeof(*s));
    *s = (sub_t){.w = w, .i = i};
    sk_lane_t *lane;
    if (sk_lane_submit(&w->loop, key, strlen(key), payload, strlen(payload), 5000, 5000, &s->super, on_outcome, &s->entry, &lane) !=
        NULL)
        abort(); /* never fails at once (lane.h) */
    if (lane != NULL) {
        free(s);
        start_lead(w, lane, i);
    }
}

static _Atomic int finished_threads;

static void on_worker_tick(sk_timer_t *t)
{
    (void)t;
}

/* one loop iteration that waits at most a few ms (a peer's result is a message, which also wakes the loop) */
static void spin(worker_t *w)
{
    sk_timer_t tick = {0};
    sk_timer_start(&w->loop, &tick, 2, on_worker_tick);
    sk_loop_run_once(&w->loop);
    sk_timer_stop(&w->loop, &tick);
}

static void *run_worker(void *arg)
{
    worker_t *w = arg;
    sk_loop_init(&w->loop, (unsigned)w->id, NULL, NULL);
    sk_lane_thread_init(&w->loop);
    while (w->completed < PER_THREAD) {
        for (int k = 0; k < 16 && w->submitted < PER_THREAD; ++k)
            submit_one(w, w->submitted++);
        spin(w);
    }
    /* stay until every thread is done: a promotion or a result may still be on its way to us */
    return NULL;
}

static void *run_and_wait(void *arg)
{
    worker_t *w = arg;
    run_worker(w);
    atomic_fetch_add(&finished_threads, 1);
    while (atomic_load(&finished_threads) < NTHREADS)
        spin(w);
    sk_lane_thread_dispose(&w->loop);
    sk_loop_dispose(&w->loop);
    return NULL;
}

static void test_threads(void)
{
    for (int t = 0; t < NTHREADS; ++t) {
        workers[t].id = t;
        pthread_create(&workers[t].tid, NULL, run_and_wait, &workers[t]);
    }
    for (int t = 0; t < NTHREADS; ++t)
        pthread_join(workers[t].tid, NULL);
    int wrong = 0, failed = 0, twice = 0, never = 0;
    for (int t = 0; t < NTHREADS; ++t) {
        wrong += workers[t].wrong;
        failed += workers[t].failed;
        for (int i = 0; i < PER_THREAD; ++i) {
            twice += workers[t].served[i] > 1;
            never += workers[t].served[i] == 0;
        }
    }
    ok(overlaps == 0, "at most one batch per key at a time across threads (%d overlaps)", overlaps);
    ok(wrong == 0 && failed == 0, "every entry got its own result (%d wrong, %d failed)", wrong, failed);
    ok(twice == 0 && never == 0, "every entry answered exactly once (%d twice, %d never)", twice, never);
    ok(batched == NTHREADS * PER_THREAD, "batches covered every entry (%d of %d)", batched, NTHREADS * PER_THREAD);
    ok(batches < NTHREADS * PER_THREAD / 2, "entries were coalesced (%d batches for %d entries)", batches, NTHREADS * PER_THREAD);
    ok(sk_lane_count() == 0, "no lane left behind (%zu)", sk_lane_count());
}

/* ===== part 2: one thread, each corner in turn ===== */

typedef struct st_probe_t {
    sk_op_t super;
    sk_lane_entry_t *entry;
    int calls;
    const char *err;
    sk_lane_t *lead;
    char result[64];
    /* what sk_lane_submit returned (NULL always) */
    const char *start_err;
} probe_t;

static sk_loop_t loop;

static void on_tick(sk_timer_t *t)
{
    (void)t;
}

static void on_probe(sk_op_t *op, sk_lane_outcome_t *o, const char *errstr)
{
    probe_t *p = (probe_t *)op;
    ++p->calls;
    p->err = errstr != NULL ? errstr : o->err;
    if (o != NULL && o->lead != NULL)
        p->lead = o->lead;
    if (o != NULL && o->result != NULL) {
        snprintf(p->result, sizeof(p->result), "%.*s", (int)o->len, o->result);
        free(o->result);
    }
}

static sk_lane_t *submit(probe_t *p, const char *key, uint64_t wait_ms, uint64_t bound_ms)
{
    *p = (probe_t){0};
    sk_lane_t *lane;
    p->start_err = sk_lane_submit(&loop, key, strlen(key), "x", 1, wait_ms, bound_ms, &p->super, on_probe, &p->entry, &lane);
    return lane;
}

static void run_for(uint64_t ms)
{
    uint64_t until = sk_now_ms() + ms;
    sk_timer_t tick = {0};
    while (sk_now_ms() < until) {
        sk_timer_start(&loop, &tick, 5, on_tick);
        sk_loop_run_once(&loop);
        sk_timer_stop(&loop, &tick);
    }
}

static void finish_with(sk_lane_batch_t *b, const char *result)
{
    const char *results[8];
    size_t lens[8];
    for (size_t i = 0; i != b->n; ++i)
        results[i] = result, lens[i] = result != NULL ? strlen(result) : 0;
    sk_lane_finish(b, result != NULL ? results : NULL, lens, NULL);
}

static void test_corners(void)
{
    probe_t a, b, c;
    sk_lane_batch_t batch = {NULL};
    sk_lane_t *lane = submit(&a, "k", 1000, 1000);
    ok(a.start_err == NULL && lane != NULL && a.entry == NULL, "the first caller leads (at once: NULL, and the lane)");
    ok(submit(&b, "k", 30, 30) == NULL && b.start_err == NULL && b.entry != NULL, "the second queues");
    run_for(60);
    ok(b.calls == 1 && b.err == sk_lane_err_busy, "not taken within wait_ms: busy");
    ok(submit(&c, "k", 30, 30) == NULL, "a third queues");
    ok(sk_lane_claim(lane, &batch, 8) == 1, "the leader claims it");
    run_for(100);
    ok(c.calls == 1 && c.err == sk_lane_err_unavailable, "claimed but unanswered within bound_ms: unavailable");
    finish_with(&batch, "late");
    run_for(10);
    ok(c.calls == 1 && sk_lane_count() == 0, "a late result is dropped and the lane freed");

    lane = submit(&a, "k", 1000, 1000);
    submit(&b, "k", 1000, 1000);
    sk_lane_withdraw(b.entry);
    sk_lane_claim(lane, &batch, 8);
    ok(batch.n == 0, "a withdrawn entry leaves the queue");
    finish_with(&batch, "r");
    ok(sk_lane_count() == 0, "nothing queued: the lane is freed at finish");

    lane = submit(&a, "k", 1000, 1000);
    submit(&b, "k", 1000, 1000);
    sk_lane_claim(lane, &batch, 8);
    sk_lane_withdraw(b.entry);
    finish_with(&batch, "r");
    run_for(10);
    ok(b.calls == 0 && sk_lane_count() == 0, "withdrawn while claimed: the leader frees it");

    lane = submit(&a, "k", 1000, 1000);
    submit(&b, "k", 1000, 1000);
    sk_lane_claim(lane, &batch, 8);
    finish_with(&batch, "r");
    sk_lane_withdraw(b.entry);
    run_for(10);
    ok(b.calls == 0 && sk_lane_count() == 0, "withdrawn while its result is on the way: dropped on arrival");

    lane = submit(&a, "k", 1000, 1000);
    submit(&b, "k", 1000, 1000);
    sk_lane_claim(lane, &batch, 8);
    finish_with(&batch, NULL);
    run_for(10);
    ok(b.calls == 1 && b.err == sk_lane_err_failed, "no result from the leader: batch failed");

    probe_t d;
    lane = submit(&a, "k", 1000, 1000);
    submit(&b, "k", 1000, 1000);
    submit(&c, "k", 1000, 1000);
    submit(&d, "k", 1000, 1000);
    finish_with(&(sk_lane_batch_t){.lane = lane}, "r"); /* the leader claimed nothing: b is promoted */
    run_for(10);
    ok(b.calls == 1 && b.lead != NULL && b.err == NULL, "the first queued entry is promoted");
    sk_lane_claim(b.lead, &batch, 1);
    ok(batch.n == 1, "the new leader claims what queued (at most max)");
    finish_with(&batch, "res");
    run_for(10);
    ok(c.calls == 1 && strcmp(c.result, "res") == 0, "its batch answers");
    ok(d.calls == 1 && d.lead != NULL, "and the lane passes on to the one left");
    submit(&b, "k", 1000, 1000);
    finish_with(&(sk_lane_batch_t){.lane = d.lead}, "r");
    sk_lane_withdraw(b.entry); /* promoted, then withdrawn before the promotion arrived */
    submit(&c, "k", 1000, 1000);
    run_for(10);
    ok(b.calls == 0 && c.calls == 1 && c.lead != NULL, "a withdrawn promotion is passed on");
    finish_with(&(sk_lane_batch_t){.lane = c.lead}, "r");
    ok(sk_lane_count() == 0, "no lane left behind");

    lane = submit(&a, "k", 1000, 1000);
    submit(&b, "k", 1000, 1000);
    sk_lane_claim(lane, &batch, 8);
    finish_with(&batch, "r");
    sk_lane_thread_dispose(&loop); /* the result is queued to a thread that ends */
    ok(b.calls == 0 && sk_lane_count() == 0, "a thread that ends settles what was queued to it");
}

int main(void)
{
    test_threads();
    sk_loop_init(&loop, 99, NULL, NULL);
    sk_lane_thread_init(&loop);
    test_corners();
    sk_loop_dispose(&loop);
    sk_lane_shutdown();
    return done();
}
