/* tests bindings/redis/lease.c: the queue of lease requests (FIFO, its bound, timeouts, cancel) */
#include "../../../../bindings/redis/lease.h"
#include "../../../../bindings/redis/metrics.h"
#include "../../test.h"

static sk_loop_t loop;
static sk_timer_t tick;

typedef struct st_waiter_t {
    sk_op_t op;
    sk_redis_lease_t lease;
    int calls;
    sk_redis_conn_t *conn;
    const char *errstr;
    uint64_t at;
} waiter_t;

static void on_lease(sk_op_t *op, sk_redis_conn_t *conn, const char *errstr)
{
    waiter_t *w = H2O_STRUCT_FROM_MEMBER(waiter_t, op, op);
    ++w->calls;
    w->conn = conn;
    w->errstr = errstr;
    w->at = sk_now_ms();
}

static void on_tick(sk_timer_t *t)
{
}

/* runs the loop for ms milliseconds (a ticking timer keeps every iteration short) */
static void run_for(uint64_t ms)
{
    uint64_t end = sk_now_ms() + ms;
    while (sk_now_ms() < end) {
        sk_timer_start(&loop, &tick, 1, on_tick);
        sk_loop_run_once(&loop);
    }
    sk_timer_stop(&loop, &tick);
}

static uint64_t counter(sk_counter_t *c)
{
    return atomic_load(&c->value);
}

int main(void)
{
    sk_redis_metrics_init();
    sk_loop_init(&loop, 0, NULL, NULL);
    sk_redis_lease_queue_t q;
    sk_redis_lease_queue_init(&q, &loop, 3, 1000);
    ok(sk_redis_lease_queue_is_empty(&q) && sk_redis_lease_shift(&q) == NULL, "a new queue is empty");

    /* FIFO and the bound */
    waiter_t w[6] = {{{0}}};
    for (int i = 0; i != 3; ++i)
        ok(sk_redis_lease_push(&q, &w[i].lease, &w[i].op, on_lease) == NULL, "request %d queued", i);
    ok(q.count == 3, "three wait");
    ok(sk_redis_lease_push(&q, &w[3].lease, &w[3].op, on_lease) == sk_redis_err_pool_busy,
       "a fourth is refused: pool busy, by pointer");
    ok(q.count == 3, "the refused one is not queued");
    ok(counter(sk_redis_metrics.lease_waits) == 3 && counter(sk_redis_metrics.lease_rejected) == 1, "waits and refusals counted");
    ok(sk_redis_lease_shift(&q) == &w[0].lease, "the oldest first");
    ok(sk_redis_lease_shift(&q) == &w[1].lease, "then the next");
    ok(q.count == 1, "one left");
    ok(sk_redis_lease_push(&q, &w[3].lease, &w[3].op, on_lease) == NULL, "a freed place can be taken again");

    /* cancel */
    sk_redis_lease_cancel(&w[2].lease);
    ok(q.count == 1, "a cancelled request leaves the queue");
    sk_redis_lease_cancel(&w[2].lease);
    sk_redis_lease_cancel(&w[0].lease);
    waiter_t never = {{0}};
    sk_redis_lease_cancel(&never.lease);
    ok(q.count == 1, "cancelling a shifted, cancelled or never queued request is harmless");
    ok(sk_redis_lease_shift(&q) == &w[3].lease && sk_redis_lease_queue_is_empty(&q), "order kept around a cancel");

    /* timeouts: each request gives up wait_ms after it was queued, in queue order, from the loop. The times leave room
     * for a loaded machine (the three test runs at once on two cores): with 50 ms waits queued 20 ms apart, a thread
     * descheduled for 5 ms at the first deadline failed "each after its own wait", and for 30 ms during the first
     * run_for, "nothing times out early" */
    uint64_t t0 = sk_now_ms();
    ok(sk_redis_lease_push(&q, &w[4].lease, &w[4].op, on_lease) == NULL, "queued");
    run_for(300);
    ok(sk_redis_lease_push(&q, &w[5].lease, &w[5].op, on_lease) == NULL, "queued 300 ms later");
    ok(w[4].calls == 0, "nothing times out early");
    while ((w[4].calls == 0 || w[5].calls == 0) && sk_now_ms() - t0 < 10000)
        run_for(1);
    run_for(10);
    ok(w[4].calls == 1 && w[4].conn == NULL && w[4].errstr == sk_redis_err_pool_timeout, "the first timed out once: pool timeout");
    ok(w[5].calls == 1 && w[5].conn == NULL && w[5].errstr == sk_redis_err_pool_timeout, "the second too");
    ok(w[4].at - t0 >= 1000 && w[5].at >= w[4].at + 100, "each after its own wait (%d, %d ms)", (int)(w[4].at - t0),
       (int)(w[5].at - t0));
    ok(sk_redis_lease_queue_is_empty(&q), "timed-out requests left the queue");
    ok(counter(sk_redis_metrics.lease_timeouts) == 2, "timeouts counted");
    int others = 0;
    for (int i = 0; i != 4; ++i)
        others += w[i].calls;
    ok(others == 0, "shifted, cancelled and refused requests are never called back (%d calls)", others);

    sk_loop_dispose(&loop);
    return done();
}
