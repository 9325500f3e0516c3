/* tests the named counter arrays of bindings/base/shared_store.c: one array per name, exact under threads, bounds */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "../../../../bindings/base/shared_store.h"
#include "../../test.h"

#define THREADS 8
#define ADDS 100000

static void *adder(void *arg)
{
    const char *err;
    /* each thread resolves the array itself, as each VM does */
    sk_shared_counters_t *c = sk_shared_counters("hot", 3, 4, 1, &err);
    for (int i = 0; i < ADDS; ++i) {
        sk_shared_counters_add(c, (size_t)(i % 2), 1);
        sk_shared_counters_add(c, 3, -2);
    }
    (void)arg;
    return NULL;
}

int main(void)
{
    const char *err;
    ok(sk_shared_counters("hot", 3, 0, 0, &err) == NULL && err == NULL, "a lookup of an absent array finds nothing");
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; ++i)
        pthread_create(&t[i], NULL, adder, NULL);
    for (int i = 0; i < THREADS; ++i)
        pthread_join(t[i], NULL);
    sk_shared_counters_t *c = sk_shared_counters("hot", 3, 0, 0, &err);
    ok(c != NULL && sk_shared_counters_size(c) == 4, "the array exists with its 4 cells");
    ok(sk_shared_counters_get(c, 0) == THREADS * ADDS / 2 && sk_shared_counters_get(c, 1) == THREADS * ADDS / 2,
       "every add counted once: %lld %lld", (long long)sk_shared_counters_get(c, 0), (long long)sk_shared_counters_get(c, 1));
    ok(sk_shared_counters_get(c, 2) == 0, "an untouched cell stays 0");
    ok(sk_shared_counters_get(c, 3) == -2LL * THREADS * ADDS, "negative deltas: %lld", (long long)sk_shared_counters_get(c, 3));
    ok(sk_shared_counters_add(c, 2, 5) == 5, "add returns the new value");
    ok(sk_shared_counters("hot", 3, 4, 1, &err) == c, "the same name is the same array");
    ok(sk_shared_counters("hot", 3, 5, 1, &err) == NULL && strcmp(err, "size mismatch") == 0, "another size is refused");
    ok(sk_shared_counters("ho", 2, 4, 1, &err) != c, "a prefix is another name");

    /* the bound: arrays are never freed, so their number is capped */
    char name[32];
    int made = 0;
    for (int i = 0; i < SK_SHARED_MAX_COUNTERS + 10; ++i) {
        snprintf(name, sizeof(name), "n-%d", i);
        made += sk_shared_counters(name, strlen(name), 1, 1, &err) != NULL;
    }
    ok(made == SK_SHARED_MAX_COUNTERS - 2, "at most %d arrays (made %d more)", SK_SHARED_MAX_COUNTERS, made);
    ok(sk_shared_counters("n-99999", 7, 1, 1, &err) == NULL && strcmp(err, "no memory") == 0, "past the bound: no memory");
    ok(sk_shared_counters("hot", 3, 4, 1, &err) == c, "an existing array is still found when full");
    return done();
}
