/* tests sk_shared_take_rate (bindings/base/shared_store.c): GCRA buckets on a clock the test drives */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "../../../../bindings/base/shared_store.h"
#include "../../test.h"

#define T0 1000000000000ULL /* an arbitrary monotonic "now", in µs */

static int take(const char *key, double rate, double burst, double cost, uint64_t now_us, double *retry)
{
    return sk_shared_take_rate(key, strlen(key), rate, burst, cost, now_us, retry);
}

/* 4 threads hammer one key at one fixed instant: exactly `burst` takes may pass, whoever wins them */
#define NTHREADS 4
#define TRIES 20000
static int admitted[NTHREADS];

static void *hammer(void *arg)
{
    int *mine = arg;
    double retry;
    for (int i = 0; i < TRIES; ++i)
        *mine += take("mt", 10, 1000, 1, T0, &retry) == 1;
    return NULL;
}

int main(void)
{
    double retry = -1;

    /* rate 10/s, burst 5: five at once, the sixth is refused with 0.1 s to wait */
    int n = 0;
    for (int i = 0; i < 5; ++i)
        n += take("a", 10, 5, 1, T0, &retry) == 1;
    ok(n == 5, "a full bucket admits its burst at once (%d of 5)", n);
    ok(take("a", 10, 5, 1, T0, &retry) == 0, "the burst is spent");
    ok(fabs(retry - 0.1) < 1e-6, "retry_after is one emission interval (%f)", retry);
    ok(take("a", 10, 5, 1, T0 + 50000, &retry) == 0 && fabs(retry - 0.05) < 1e-6, "half-way there: 0.05 s (%f)", retry);
    ok(take("a", 10, 5, 1, T0 + 100000, &retry) == 1, "admitted exactly when retry_after said");
    ok(take("a", 10, 5, 3, T0 + 100000, &retry) == 0 && fabs(retry - 0.3) < 1e-6, "a cost of 3 waits 3 intervals (%f)", retry);

    /* then it runs at the rate: drive the clock 10 s in 1 ms steps, taking whenever admitted */
    n = 0;
    for (uint64_t t = T0 + 100000; t <= T0 + 10100000; t += 1000)
        n += take("a", 10, 5, 1, t, &retry) == 1;
    ok(n == 100, "10 s at 10/s admits 100 (%d)", n);

    /* an idle bucket refills up to its burst, never beyond */
    n = 0;
    for (int i = 0; i < 10; ++i)
        n += take("a", 10, 5, 1, T0 + 100000000, &retry) == 1;
    ok(n == 5, "after a long idle spell, only the burst again (%d)", n);

    /* a fractional rate: 0.5/s, burst 1 */
    ok(take("slow", 0.5, 1, 1, T0, &retry) == 1, "first of a slow bucket");
    ok(take("slow", 0.5, 1, 1, T0, &retry) == 0 && fabs(retry - 2.0) < 1e-6, "then 2 s to wait (%f)", retry);

    /* a cost above the burst can never pass */
    ok(take("big", 10, 5, 6, T0, &retry) == 0 && isinf(retry), "cost > burst: never (%f)", retry);

    /* keys are independent */
    ok(take("b", 10, 1, 1, T0, &retry) == 1 && take("c", 10, 1, 1, T0, &retry) == 1, "each key has its own bucket");

    /* a refused take leaves the bucket as it was */
    ok(take("b", 10, 1, 1, T0 + 1, &retry) == 0 && take("b", 10, 1, 1, T0 + 100000, &retry) == 1,
       "refusals do not push the next admission back");

    /* the store's entry lives only until the bucket is full again: about 100 ms here */
    size_t before = sk_shared_count();
    take("expires", 10, 1, 1, T0, &retry);
    ok(sk_shared_count() == before + 1, "a take stores one entry");
    struct timespec ts = {0, 150 * 1000000L};
    nanosleep(&ts, NULL);
    sk_shared_value_t v;
    sk_shared_get("expires", 7, &v);
    ok(v.type == SK_SHARED_NIL, "an idle key frees itself");

    /* a full store refuses to create the bucket; the caller (limit.take) fails open */
    sk_shared_init(0);
    ok(take("no-room", 10, 5, 1, T0, &retry) == -1, "a full store reports -1");
    sk_shared_init(65536);

    pthread_t th[NTHREADS];
    for (int i = 0; i < NTHREADS; ++i)
        pthread_create(&th[i], NULL, hammer, &admitted[i]);
    int total = 0;
    for (int i = 0; i < NTHREADS; ++i) {
        pthread_join(th[i], NULL);
        total += admitted[i];
    }
    ok(total == 1000, "4 threads, %d takes, one instant: exactly the burst of 1000 admitted (%d)", NTHREADS * TRIES, total);
    return done();
}
