/* tests core/loop.c: timers fire in deadline order and never early, re-arming and stopping, deferred callbacks after
 * the iteration (once however often queued, in the order queued, cancellable), which loop a thread runs, and a held
 * loop counted as a stall */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../../../core/metrics.h"
#include "../../../core/loop.h"
#include "../test.h"

/* h2o 2.2.5 has no way to free an evloop (tests/lsan.supp says the same for the server) */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libh2o-evloop.so\n";
}

/* a bound on every wait below, only to turn a hang into a failure */
#define HANG_MS 10000

static sk_loop_t loop;

/* ===== timers ===== */

typedef struct st_probe_t {
    sk_timer_t timer;
    int id;
    uint64_t armed_at; /* sk_now_ms() just before the last sk_timer_start */
    uint64_t delay_ms;
    uint64_t fired_at;  /* sk_now_ms() in the callback */
    int fired;          /* how many times it fired */
    int rearm;          /* re-arms itself from its callback this many more times */
    sk_timer_t *victim; /* stops this timer from its callback */
} probe_t;

static int fired_ids[256], nfired;

static void on_probe(sk_timer_t *t)
{
    probe_t *p = H2O_STRUCT_FROM_MEMBER(probe_t, timer, t);
    p->fired_at = sk_now_ms();
    ++p->fired;
    if (nfired < (int)(sizeof(fired_ids) / sizeof(fired_ids[0])))
        fired_ids[nfired++] = p->id;
    if (p->victim != NULL)
        sk_timer_stop(&loop, p->victim);
    if (p->rearm > 0) {
        --p->rearm;
        p->armed_at = sk_now_ms();
        sk_timer_start(&loop, &p->timer, p->delay_ms, on_probe);
    }
}

static void arm(probe_t *p, int id, uint64_t delay_ms)
{
    p->id = id;
    p->delay_ms = delay_ms;
    p->armed_at = sk_now_ms();
    sk_timer_start(&loop, &p->timer, delay_ms, on_probe);
}

/* runs the loop until `want` callbacks fired in all, or the hang bound */
static void run_until_fired(int want)
{
    uint64_t give_up = sk_now_ms() + HANG_MS;
    while (nfired < want && sk_now_ms() < give_up)
        sk_loop_run_once(&loop);
}

static void on_tick(sk_timer_t *t)
{
    (void)t;
}

/* one iteration that returns even when nothing is pending (an iteration with none would wait for I/O for good) */
static void tick(void)
{
    sk_timer_t t = {0};
    sk_timer_start(&loop, &t, 1, on_tick);
    sk_loop_run_once(&loop);
    sk_timer_stop(&loop, &t);
}

static void reset_fired(void)
{
    nfired = 0;
    memset(fired_ids, 0, sizeof(fired_ids));
}

static void test_deadline_order(void)
{
    probe_t p[4] = {0};
    reset_fired();
    /* armed out of order */
    arm(&p[0], 30, 30);
    arm(&p[1], 10, 10);
    arm(&p[2], 0, 0);
    arm(&p[3], 20, 20);
    ok(sk_timer_is_active(&p[0].timer) && sk_timer_is_active(&p[2].timer), "armed timers are active");
    run_until_fired(4);
    ok(nfired == 4, "every timer fired (%d)", nfired);
    ok(fired_ids[0] == 0 && fired_ids[1] == 10 && fired_ids[2] == 20 && fired_ids[3] == 30, "in deadline order: %d %d %d %d",
       fired_ids[0], fired_ids[1], fired_ids[2], fired_ids[3]);
    int early = 0, twice = 0;
    for (int i = 0; i < 4; ++i) {
        early += p[i].fired_at < p[i].armed_at + p[i].delay_ms;
        twice += p[i].fired != 1;
    }
    ok(early == 0, "no timer fired before its delay (%d early)", early);
    ok(twice == 0, "each fired once");
    ok(!sk_timer_is_active(&p[0].timer), "a fired timer is no longer active");
}

/* many timers, some stopped (from the root, the middle and the end of the heap): the rest fire in deadline order */
static void test_heap(void)
{
    enum { N = 200 };
    static probe_t p[N];
    memset(p, 0, sizeof(p));
    reset_fired();
    unsigned seed = 12345;
    for (int i = 0; i < N; ++i) {
        seed = seed * 1103515245 + 12345;
        arm(&p[i], i, (seed >> 16) % 40);
    }
    int stopped = 0;
    for (int i = 0; i < N; i += 3) {
        sk_timer_stop(&loop, &p[i].timer);
        ++stopped;
    }
    sk_timer_stop(&loop, &p[0].timer); /* twice: harmless */
    run_until_fired(N - stopped);
    /* a little longer: a stopped timer must not fire late either */
    probe_t last = {0};
    arm(&last, -1, 45);
    run_until_fired(N - stopped + 1);

    int stopped_fired = 0, early = 0, out_of_order = 0;
    for (int i = 0; i < N; ++i) {
        if (i % 3 == 0)
            stopped_fired += p[i].fired;
        else
            early += p[i].fired_at < p[i].armed_at + p[i].delay_ms;
    }
    for (int k = 1; k < nfired - 1; ++k)
        out_of_order += p[fired_ids[k]].timer.at < p[fired_ids[k - 1]].timer.at;
    ok(nfired == N - stopped + 1 && fired_ids[nfired - 1] == -1, "every armed timer fired once (%d of %d)", nfired,
       N - stopped + 1);
    ok(stopped_fired == 0, "a stopped timer never fires (%d did)", stopped_fired);
    ok(early == 0, "none fired early (%d)", early);
    ok(out_of_order == 0, "in deadline order (%d out of order)", out_of_order);
    ok(loop.timers.size == 0, "the heap is empty (%zu)", loop.timers.size);
}

static void test_rearm(void)
{
    reset_fired();
    /* re-armed before it fires: it fires once, after the new delay */
    probe_t moved = {0};
    arm(&moved, 1, 5);
    arm(&moved, 1, 40);
    /* re-armed from its own callback: fires again each time */
    probe_t repeat = {0};
    repeat.rearm = 2;
    arm(&repeat, 2, 1);
    run_until_fired(4);
    ok(moved.fired == 1, "a re-armed timer fires once (%d)", moved.fired);
    ok(moved.fired_at >= moved.armed_at + 40, "after the new delay");
    ok(repeat.fired == 3 && !sk_timer_is_active(&repeat.timer), "a timer re-armed from its callback fires again (%d)",
       repeat.fired);

    /* two timers due in the same iteration: the first one's callback stops the second, which then never fires */
    reset_fired();
    probe_t first = {0}, second = {0};
    first.victim = &second.timer;
    arm(&first, 1, 0);
    arm(&second, 2, 1);
    uint64_t give_up = sk_now_ms() + HANG_MS;
    while (sk_now_ms() < second.timer.at && sk_now_ms() < give_up)
        ;
    sk_loop_run_once(&loop);
    probe_t after = {0};
    arm(&after, 3, 5);
    run_until_fired(2);
    ok(first.fired == 1 && second.fired == 0 && after.fired == 1,
       "a timer stopped by an earlier callback of the same "
       "iteration does not fire (%d %d %d)",
       first.fired, second.fired, after.fired);
}

/* ===== deferred callbacks ===== */

typedef struct st_job_t {
    sk_deferred_t deferred;
    char name;
    int runs;
    sk_deferred_t *cancels;
    int requeue; /* queues itself again this many more times */
} job_t;

static char order[64];
static size_t norder;

static void record(char c)
{
    if (norder + 1 < sizeof(order))
        order[norder++] = c;
    order[norder] = '\0';
}

static void on_job(sk_deferred_t *d)
{
    job_t *j = H2O_STRUCT_FROM_MEMBER(job_t, deferred, d);
    ++j->runs;
    record(j->name);
    if (j->cancels != NULL)
        sk_loop_cancel_defer(j->cancels);
    if (j->requeue > 0) {
        --j->requeue;
        sk_loop_defer(&loop, &j->deferred, on_job);
    }
}

static void on_timer_record(sk_timer_t *t)
{
    (void)t;
    record('T');
}

static void test_defer(void)
{
    norder = 0;
    order[0] = '\0';
    /* entries must start zeroed (unlinked) */
    job_t a = {.name = 'a'}, b = {.name = 'b'}, c = {.name = 'c'};
    sk_loop_defer(&loop, &a.deferred, on_job);
    sk_loop_defer(&loop, &b.deferred, on_job);
    sk_loop_defer(&loop, &a.deferred, on_job); /* already queued: not queued twice */
    sk_loop_defer(&loop, &c.deferred, on_job);
    ok(a.runs == 0 && b.runs == 0, "sk_loop_defer does not run the callback");
    sk_timer_t due = {0};
    sk_timer_start(&loop, &due, 0, on_timer_record);
    sk_loop_run_once(&loop);
    ok(strcmp(order, "Tabc") == 0, "after the iteration's timers, in the order queued, once each: %s", order);
    tick();
    ok(a.runs == 1 && b.runs == 1 && c.runs == 1, "nothing runs again (%d %d %d)", a.runs, b.runs, c.runs);

    /* cancelled before the iteration, or by an earlier entry of the same batch: never runs */
    norder = 0;
    job_t d = {.name = 'd'}, e = {.name = 'e'}, f = {.name = 'f'};
    d.cancels = &f.deferred;
    sk_loop_defer(&loop, &d.deferred, on_job);
    sk_loop_defer(&loop, &e.deferred, on_job);
    sk_loop_defer(&loop, &f.deferred, on_job);
    sk_loop_cancel_defer(&e.deferred);
    sk_loop_cancel_defer(&e.deferred); /* twice: harmless */
    tick();
    tick();
    ok(strcmp(order, "d") == 0 && e.runs == 0 && f.runs == 0, "cancelled entries never run: %s", order);
    sk_loop_defer(&loop, &e.deferred, on_job);
    sk_loop_run_once(&loop);
    ok(e.runs == 1, "a cancelled entry can be queued again");

    /* an entry that queues itself runs once per iteration, so it cannot starve the loop */
    job_t g = {.name = 'g', .requeue = 2};
    sk_loop_defer(&loop, &g.deferred, on_job);
    sk_loop_run_once(&loop);
    ok(g.runs == 1, "queued from its own callback: not run again in the same iteration (%d)", g.runs);
    tick();
    tick();
    tick();
    ok(g.runs == 3, "but in the next ones (%d)", g.runs);
}

/* ===== which loop a thread runs ===== */

static void *current_on_other_thread(void *arg)
{
    (void)arg;
    return sk_loop_current();
}

static void test_current(void)
{
    ok(sk_loop_current() == &loop, "sk_loop_init binds the loop to the calling thread");
    pthread_t tid;
    void *other = &loop;
    pthread_create(&tid, NULL, current_on_other_thread, NULL);
    pthread_join(tid, &other);
    ok(other == NULL, "another thread runs no loop");
    sk_loop_t second;
    sk_loop_init(&second, 7, loop.evloop, loop.queue);
    ok(sk_loop_current() == &second && second.id == 7 && second.queue_is_borrowed, "a second init binds the second loop");
    sk_loop_bind(&loop);
    ok(sk_loop_current() == &loop, "sk_loop_bind binds it back");
    sk_loop_dispose(&second); /* borrowed queue: left alone; not the current loop: current unchanged */
    ok(sk_loop_current() == &loop, "disposing another loop leaves the current one");
}

/* a callback that holds the thread: the timer due meanwhile runs late, and the loop counts one stall (and says so in
 * the log and in seckilld_loop_stalls_total) with its lateness */
static void on_hold(sk_deferred_t *d)
{
    (void)d;
    usleep((SK_LOOP_STALL_MS + 100) * 1000);
}

static void test_stall(void)
{
    probe_t due = {0};
    sk_deferred_t hold = {0};
    reset_fired();
    uint64_t before = loop.stalls.count, counted = atomic_load(&loop.stalls.counter->value);
    arm(&due, 1, 5);
    sk_loop_defer(&loop, &hold, on_hold);
    run_until_fired(1);
    ok(due.fired == 1, "the timer due during the hold fired after it");
    ok(loop.stalls.count >= before + 1, "the late timer was counted as a stall (%llu before, %llu after)",
       (unsigned long long)before, (unsigned long long)loop.stalls.count);
    ok(loop.stalls.worst_ms >= SK_LOOP_STALL_MS, "its lateness is at least the threshold (%llu ms)",
       (unsigned long long)loop.stalls.worst_ms);
    ok(atomic_load(&loop.stalls.counter->value) == counted + (loop.stalls.count - before),
       "and in the metric seckilld_loop_stalls_total");
}

int main(void)
{
    ok(sk_loop_current() == NULL, "no loop before sk_loop_init");
    sk_loop_init(&loop, 0, NULL, NULL);
    test_current();
    test_deadline_order();
    test_heap();
    test_rearm();
    test_defer();
    test_stall();
    sk_loop_dispose(&loop);
    ok(sk_loop_current() == NULL, "no loop after sk_loop_dispose");
    return done();
}
