/* tests bindings/redis/gate.c: the per-thread FIFO gates (grant order, width, timeout, queue bound, freeing) */
#include <string.h>
#include "../../../../bindings/redis/err.h"
#include "../../../../bindings/redis/gate.h"
#include "../../../../bindings/redis/metrics.h"
#include "../../test.h"

static sk_loop_t loop;
static sk_timer_t tick;

typedef struct st_waiter_t {
    sk_op_t op;
    sk_redis_gate_entry_t entry;
    int calls, order;
    const char *errstr;
    /* what sk_redis_gate_enter returned */
    const char *start_err;
} waiter_t;

static int told;

static void on_gate(sk_op_t *op, sk_redis_gate_entry_t *entry, const char *errstr)
{
    waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, op, op);
    ok(entry == &w->entry, "the gate completes the op with its own entry");
    ++w->calls;
    w->order = ++told;
    w->errstr = errstr;
}

static void on_tick(sk_timer_t *t)
{
}

/* runs the loop for ms milliseconds (0: one iteration) */
static void run_for(uint64_t ms)
{
    uint64_t end = sk_now_ms() + ms;
    do {
        sk_timer_start(&loop, &tick, 1, on_tick);
        sk_loop_run_once(&loop);
    } while (sk_now_ms() < end);
    sk_timer_stop(&loop, &tick);
}

static uint64_t counter(sk_counter_t *c)
{
    return atomic_load(&c->value);
}

enum { ENTERED, QUEUED, REFUSED };

/* the start's one shape (core/op.h): NULL and held: entered at once; NULL and not held: queued; an error: refused */
static int enter(waiter_t *w, const char *key, const sk_redis_gate_limits_t *limits)
{
    w->start_err = sk_redis_gate_enter(&loop, &w->entry, &w->op, key, strlen(key), limits, on_gate);
    if (w->start_err != NULL)
        return REFUSED;
    return sk_redis_gate_is_held(&w->entry) ? ENTERED : QUEUED;
}

int main(void)
{
    sk_redis_metrics_init();
    sk_loop_init(&loop, 0, NULL, NULL);
    sk_redis_gate_limits_t one = {.width = 1, .queue = 3, .wait_ms = 1000};
    waiter_t w[8] = {{{0}}};

    /* grant order is FIFO, and a waiter is told from the loop, never inside the leave that freed its slot */
    ok(sk_redis_gate_count() == 0, "no gate at first");
    ok(enter(&w[0], "hot", &one) == ENTERED && sk_redis_gate_is_held(&w[0].entry), "the first holds at once");
    for (int i = 1; i <= 3; ++i)
        ok(enter(&w[i], "hot", &one) == QUEUED && !sk_redis_gate_is_held(&w[i].entry), "waiter %d queued", i);
    ok(enter(&w[4], "hot", &one) == REFUSED && w[4].start_err == sk_redis_err_busy && !sk_redis_gate_is_held(&w[4].entry),
       "past the queue bound: refused at once with busy, by pointer");
    ok(counter(sk_redis_metrics.gate_waits) == 3 && counter(sk_redis_metrics.gate_rejected) == 1, "waits and refusals counted");
    ok(sk_redis_gate_count() == 1, "one gate for one key");
    sk_redis_gate_leave(&w[0].entry);
    ok(sk_redis_gate_is_held(&w[1].entry) && w[1].calls == 0, "the slot passes to the oldest waiter, told later");
    run_for(0);
    ok(w[1].calls == 1 && w[1].errstr == NULL && w[2].calls == 0, "told from the loop: granted");
    sk_redis_gate_leave(&w[1].entry);
    sk_redis_gate_leave(&w[2].entry); /* granted, not yet told: leaving cancels the telling and passes the slot on */
    run_for(0);
    ok(w[2].calls == 0, "an entry that left is never told");
    ok(w[3].calls == 1 && w[3].errstr == NULL && sk_redis_gate_is_held(&w[3].entry), "the next one got the slot");
    ok(w[1].order < w[3].order, "in queue order");
    sk_redis_gate_leave(&w[3].entry);
    sk_redis_gate_leave(&w[3].entry);
    sk_redis_gate_leave(&w[4].entry);
    ok(sk_redis_gate_count() == 0, "a gate without holders or waiters is freed (leaving twice, or after a refusal, is harmless)");

    /* width */
    sk_redis_gate_limits_t two = {.width = 2, .queue = 8, .wait_ms = 1000};
    memset(w, 0, sizeof(w));
    ok(enter(&w[0], "wide", &two) == ENTERED && enter(&w[1], "wide", &two) == ENTERED, "two hold a gate of width 2");
    ok(enter(&w[2], "wide", &two) == QUEUED && enter(&w[3], "wide", &two) == QUEUED, "a third and a fourth wait");
    ok(enter(&w[4], "other", &one) == ENTERED && sk_redis_gate_count() == 2, "another key has a gate of its own");
    sk_redis_gate_leave(&w[0].entry);
    run_for(0);
    ok(w[2].calls == 1 && w[3].calls == 0, "one slot freed, one waiter granted");
    sk_redis_gate_leave(&w[1].entry);
    sk_redis_gate_leave(&w[2].entry);
    run_for(0);
    ok(w[3].calls == 1 && sk_redis_gate_is_held(&w[3].entry), "then the last");
    sk_redis_gate_leave(&w[3].entry);
    sk_redis_gate_leave(&w[4].entry);
    ok(sk_redis_gate_count() == 0, "all freed");

    /* timeout: a waiter gives up after wait_ms with "busy" and holds nothing; the ones behind it keep their place.
     * The one behind waits far longer than the first: with the same 30 ms it would be due 10 ms after the first, and a
     * thread descheduled across both deadlines (a loaded machine) sees both time out in one iteration */
    sk_redis_gate_limits_t brief = {.width = 1, .queue = 8, .wait_ms = 30}, patient = brief;
    patient.wait_ms = 60000;
    memset(w, 0, sizeof(w));
    uint64_t t0 = sk_now_ms();
    ok(enter(&w[0], "slow", &brief) == ENTERED, "held");
    ok(enter(&w[1], "slow", &brief) == QUEUED, "queued");
    run_for(10);
    ok(enter(&w[2], "slow", &patient) == QUEUED, "queued 10 ms later");
    while (w[1].calls == 0 && sk_now_ms() - t0 < 1000)
        run_for(1);
    ok(w[1].calls == 1 && w[1].errstr == sk_redis_err_busy && !sk_redis_gate_is_held(&w[1].entry),
       "the first waiter timed out: busy, by pointer (%d ms)", (int)(sk_now_ms() - t0));
    ok(sk_now_ms() - t0 >= 30 && w[2].calls == 0, "not before wait_ms, and the next one still waits");
    sk_redis_gate_leave(&w[0].entry);
    run_for(0);
    ok(w[2].calls == 1 && w[2].errstr == NULL, "the next one is granted when the holder leaves");
    ok(counter(sk_redis_metrics.gate_timeouts) == 1, "timeouts counted");
    sk_redis_gate_leave(&w[2].entry);
    ok(sk_redis_gate_count() == 0, "freed again");

    /* many keys: the map grows and shrinks back to nothing */
    static waiter_t many[100];
    char key[32];
    for (int i = 0; i != 100; ++i) {
        snprintf(key, sizeof(key), "key-%d", i);
        enter(&many[i], key, &one);
    }
    ok(sk_redis_gate_count() == 100, "100 keys, 100 gates");
    for (int i = 0; i != 100; ++i)
        sk_redis_gate_leave(&many[i].entry);
    ok(sk_redis_gate_count() == 0, "all freed when idle");

    sk_loop_dispose(&loop);
    return done();
}
