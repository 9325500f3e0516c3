/* tests bindings/base/shared_store.c: expiry inside shared hash chains, and the capacity sweep */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "../../../../bindings/base/shared_store.h"
#include "../../test.h"

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static sk_shared_value_t int_value(int64_t i)
{
    sk_shared_value_t v = {.type = SK_SHARED_INT};
    v.i = i;
    return v;
}

int main(void)
{
    char key[32];
    sk_shared_init(1000000);
    /* 200,000 short-lived keys over 65,536 buckets: most chains hold expired entries in front of live ones */
    for (int i = 0; i < 200000; ++i) {
        sk_shared_value_t v = int_value(-1);
        snprintf(key, sizeof(key), "short-%d", i);
        sk_shared_set(key, strlen(key), &v, 1);
    }
    for (int i = 0; i < 5000; ++i) {
        sk_shared_value_t v = int_value(i);
        snprintf(key, sizeof(key), "live-%d", i);
        sk_shared_set(key, strlen(key), &v, 0);
    }
    nap_ms(5);
    int wrong = 0, resurrected = 0;
    for (int i = 0; i < 200000; ++i) {
        sk_shared_value_t v;
        snprintf(key, sizeof(key), "short-%d", i);
        sk_shared_get(key, strlen(key), &v);
        resurrected += v.type != SK_SHARED_NIL;
        /* incr on an expired key starts it afresh and must not touch the live key after it in the chain */
        int64_t r;
        if (i % 7 == 0 && (sk_shared_incr(key, strlen(key), 1, 100, 0, &r) != 0 || r != 101))
            ++wrong;
    }
    for (int i = 0; i < 5000; ++i) {
        sk_shared_value_t v;
        snprintf(key, sizeof(key), "live-%d", i);
        sk_shared_get(key, strlen(key), &v);
        wrong += v.type != SK_SHARED_INT || v.i != i;
    }
    ok(resurrected == 0, "expired keys read as nil (%d did not)", resurrected);
    ok(wrong == 0, "no operation on an expired key reached another key (%d did)", wrong);

    /* a full store sweeps expired entries before refusing. The entries live 300 ms: with 1 ms, a slow run (ASan on a
     * loaded machine) saw them expire before the refusal was checked, and the store rightly made room. */
    sk_shared_init(sk_shared_count() + 100);
    for (int i = 0; i < 100; ++i) {
        sk_shared_value_t v = int_value(i);
        snprintf(key, sizeof(key), "brief-%d", i);
        ok(sk_shared_set(key, strlen(key), &v, 300) == 0, "fills the store");
    }
    sk_shared_value_t v = int_value(1);
    ok(sk_shared_set("one-more", 8, &v, 0) != 0, "a full store refuses");
    nap_ms(310);
    int stored = 0;
    for (int i = 0; i < 50; ++i) {
        snprintf(key, sizeof(key), "after-%d", i);
        stored += sk_shared_set(key, strlen(key), &v, 0) == 0;
    }
    ok(stored == 50, "expired entries make room again (%d of 50 stored)", stored);

    /* keys written once and never read again (made-up ids remembered a moment) do not pile up: an insert sweeps its
     * stripe once that stripe's last sweep is a second old, full store or not */
    sk_shared_init(1000000);
    size_t before = sk_shared_count();
    for (int i = 0; i < 20000; ++i) {
        snprintf(key, sizeof(key), "flood-%d", i);
        sk_shared_set(key, strlen(key), &v, 500);
    }
    sk_shared_value_t got;
    sk_shared_get("flood-19999", 11, &got);
    ok(got.type == SK_SHARED_INT && got.i == 1, "the flood is stored");
    nap_ms(1600);
    for (int i = 0; i < 2000; ++i) {
        snprintf(key, sizeof(key), "next-%d", i);
        sk_shared_set(key, strlen(key), &v, 0);
    }
    ok(sk_shared_count() <= before + 2000, "expired entries nobody read were swept (%zu left of 22,000)",
       sk_shared_count() - before);
    return done();
}
