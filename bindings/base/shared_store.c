/*
 * shared_store.c: a chained hash table split into stripes, each under its own mutex, so that workers touching
 * different keys rarely contend. Expired entries are removed when a lookup meets them, and by a sweep of a stripe
 * when an insert into it finds its last sweep a second old (so keys written once and never looked up again, such as
 * a flood of made-up item ids remembered for a second, leave the store at about rate x ttl entries instead of filling
 * it to max_entries), or the store full.
 */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/loop.h"
#include "shared_store.h"

#define NSTRIPES 64
#define NBUCKETS_PER_STRIPE 1024
/* an insert sweeps its stripe when the stripe's last sweep is this old */
#define SWEEP_EVERY_MS 1000

typedef struct st_entry_t {
    struct st_entry_t *next;
    uint64_t expires_at; /* monotonic ms; 0 = never */
    sk_shared_value_t value;
    size_t keylen;
    char key[];
} entry_t;

static struct {
    pthread_mutex_t mutex;
    uint64_t swept_at; /* monotonic ms of the stripe's last sweep (its lock held) */
    entry_t *buckets[NBUCKETS_PER_STRIPE];
} stripes[NSTRIPES];
static _Atomic size_t count;
static size_t max_entries = 65536;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init_stripes(void)
{
    for (size_t i = 0; i < NSTRIPES; ++i)
        pthread_mutex_init(&stripes[i].mutex, NULL);
}

void sk_shared_init(size_t max)
{
    pthread_once(&once, init_stripes);
    max_entries = max;
}

static uint64_t hash(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; ++i)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    return h;
}

static void free_value(sk_shared_value_t *v)
{
    if (v->type == SK_SHARED_STR)
        free(v->s.base);
    v->type = SK_SHARED_NIL;
}

static void copy_value(sk_shared_value_t *dst, const sk_shared_value_t *src)
{
    *dst = *src;
    if (src->type == SK_SHARED_STR) {
        dst->s.base = malloc(src->s.len + 1);
        memcpy(dst->s.base, src->s.base, src->s.len);
        dst->s.base[src->s.len] = '\0';
    }
}

/* finds the entry (dropping it if expired); *slot is where it is or would be linked. Stripe lock held. */
static entry_t **find(entry_t **bucket, const char *key, size_t keylen, uint64_t now)
{
    entry_t **slot = bucket;
    while (*slot != NULL) {
        entry_t *e = *slot;
        if (e->keylen == keylen && memcmp(e->key, key, keylen) == 0) {
            if (e->expires_at != 0 && e->expires_at <= now) {
                /* *slot now holds the next entry (another key): keep scanning from it, it is no match */
                *slot = e->next;
                free_value(&e->value);
                free(e);
                atomic_fetch_sub(&count, 1);
                continue;
            }
            return slot;
        }
        slot = &e->next;
    }
    return slot;
}

#define LOCATE(key, keylen)                                                                                                        \
    pthread_once(&once, init_stripes);                                                                                             \
    uint64_t h = hash(key, keylen);                                                                                                \
    size_t stripe = h % NSTRIPES;                                                                                                  \
    entry_t **bucket = &stripes[stripe].buckets[(h / NSTRIPES) % NBUCKETS_PER_STRIPE];                                             \
    pthread_mutex_lock(&stripes[stripe].mutex);                                                                                    \
    entry_t **slot = find(bucket, key, keylen, sk_now_ms())

#define UNLOCK() pthread_mutex_unlock(&stripes[stripe].mutex)

void sk_shared_get(const char *key, size_t keylen, sk_shared_value_t *out)
{
    LOCATE(key, keylen);
    if (*slot != NULL)
        copy_value(out, &(*slot)->value);
    else
        out->type = SK_SHARED_NIL;
    UNLOCK();
}

/* drops the expired entries of one stripe (its lock held); expired keys nobody looks up again would otherwise
 * count against max_entries for ever */
static void sweep(size_t stripe, uint64_t now)
{
    stripes[stripe].swept_at = now;
    for (size_t b = 0; b < NBUCKETS_PER_STRIPE; ++b) {
        entry_t **slot = &stripes[stripe].buckets[b];
        while (*slot != NULL) {
            entry_t *e = *slot;
            if (e->expires_at != 0 && e->expires_at <= now) {
                *slot = e->next;
                free_value(&e->value);
                free(e);
                atomic_fetch_sub(&count, 1);
            } else {
                slot = &e->next;
            }
        }
    }
}

/* links a new entry at slot (the end of bucket's chain) */
static entry_t *insert(size_t stripe, entry_t **bucket, entry_t **slot, const char *key, size_t keylen)
{
    uint64_t now = sk_now_ms();
    if (now - stripes[stripe].swept_at >= SWEEP_EVERY_MS && atomic_load(&count) < max_entries) {
        /* a stripe's whole table at most once a second: 1,024 chains, nothing next to a buy */
        sweep(stripe, now);
        for (slot = bucket; *slot != NULL; slot = &(*slot)->next) /* the sweep may have freed slot's entry */
            ;
    }
    if (atomic_load(&count) >= max_entries) {
        sweep(stripe, now);
        /* then the other stripes, skipping any that is busy: waiting for a second lock while holding one could
         * deadlock with a thread doing the same the other way round */
        for (size_t i = 1; i < NSTRIPES && atomic_load(&count) >= max_entries; ++i) {
            size_t other = (stripe + i) % NSTRIPES;
            if (pthread_mutex_trylock(&stripes[other].mutex) == 0) {
                sweep(other, now);
                pthread_mutex_unlock(&stripes[other].mutex);
            }
        }
        if (atomic_load(&count) >= max_entries)
            return NULL;
        /* the sweep may have freed the entry that slot points into: find the chain's end again from its head */
        for (slot = bucket; *slot != NULL; slot = &(*slot)->next)
            ;
    }
    entry_t *e = calloc(1, sizeof(*e) + keylen);
    memcpy(e->key, key, keylen);
    e->keylen = keylen;
    *slot = e;
    atomic_fetch_add(&count, 1);
    return e;
}

int sk_shared_set(const char *key, size_t keylen, const sk_shared_value_t *v, uint64_t ttl_ms)
{
    int ret = 0;
    LOCATE(key, keylen);
    entry_t *e = *slot;
    if (v->type == SK_SHARED_NIL) {
        if (e != NULL) {
            *slot = e->next;
            free_value(&e->value);
            free(e);
            atomic_fetch_sub(&count, 1);
        }
    } else if (e != NULL || (e = insert(stripe, bucket, slot, key, keylen)) != NULL) {
        free_value(&e->value);
        copy_value(&e->value, v);
        e->expires_at = ttl_ms != 0 ? sk_now_ms() + ttl_ms : 0;
    } else {
        ret = -1;
    }
    UNLOCK();
    return ret;
}

int sk_shared_incr(const char *key, size_t keylen, int64_t delta, int64_t init, uint64_t ttl_ms, int64_t *result)
{
    int ret = 0;
    LOCATE(key, keylen);
    entry_t *e = *slot;
    if (e == NULL) {
        if ((e = insert(stripe, bucket, slot, key, keylen)) == NULL) {
            ret = -2;
        } else {
            e->value.type = SK_SHARED_INT;
            e->value.i = init;
            e->expires_at = ttl_ms != 0 ? sk_now_ms() + ttl_ms : 0;
        }
    } else if (e->value.type != SK_SHARED_INT) {
        ret = -1;
    }
    if (ret == 0)
        *result = (e->value.i += delta);
    UNLOCK();
    return ret;
}

int sk_shared_take_rate(const char *key, size_t keylen, double rate, double burst, double cost, uint64_t now_us,
                        double *retry_after_s)
{
    double interval = 1e6 / rate, tolerance = burst * interval;
    if (cost > burst) {
        *retry_after_s = INFINITY;
        return 0;
    }
    int ret;
    LOCATE(key, keylen);
    entry_t *e = *slot;
    /* an absent (or expired) bucket is full: its TAT is now. A non-integer entry cannot be ours (the caller prefixes
     * its keys): treat it as full and overwrite it. */
    int64_t now = (int64_t)now_us;
    int64_t tat = e != NULL && e->value.type == SK_SHARED_INT && e->value.i > now ? e->value.i : now;
    int64_t new_tat = tat + (int64_t)llround(cost * interval);
    if ((double)(new_tat - now) > tolerance) {
        /* refused: the bucket is untouched. The same cost fits once now has advanced to new_tat - tolerance. */
        *retry_after_s = ((double)(new_tat - now) - tolerance) / 1e6;
        ret = 0;
    } else if (e == NULL && (e = insert(stripe, bucket, slot, key, keylen)) == NULL) {
        ret = -1;
    } else {
        free_value(&e->value);
        e->value.type = SK_SHARED_INT;
        e->value.i = new_tat;
        /* the store's clock is sk_now_ms: expire when the bucket is full again, rounded up to the next ms */
        e->expires_at = sk_now_ms() + (uint64_t)(new_tat - now + 999) / 1000 + 1;
        ret = 1;
    }
    UNLOCK();
    return ret;
}

size_t sk_shared_count(void)
{
    return atomic_load(&count);
}

/* ===== named counter arrays ===== */

struct st_sk_shared_counters_t {
    struct st_sk_shared_counters_t *next; /* in its bucket's chain */
    size_t ncells;
    size_t namelen;
    _Atomic int64_t *cells;
    char name[];
};

#define NCOUNTER_BUCKETS 4096
static struct {
    pthread_mutex_t mutex;
    sk_shared_counters_t *buckets[NCOUNTER_BUCKETS];
    size_t n;
} counters = {.mutex = PTHREAD_MUTEX_INITIALIZER};

sk_shared_counters_t *sk_shared_counters(const char *name, size_t len, size_t ncells, int create, const char **err)
{
    sk_shared_counters_t **slot = &counters.buckets[hash(name, len) % NCOUNTER_BUCKETS], *c;
    *err = NULL;
    pthread_mutex_lock(&counters.mutex);
    for (; (c = *slot) != NULL; slot = &c->next)
        if (c->namelen == len && memcmp(c->name, name, len) == 0)
            break;
    if (c != NULL && create && c->ncells != ncells) {
        *err = "size mismatch";
        c = NULL;
    } else if (c == NULL && create) {
        if (counters.n >= SK_SHARED_MAX_COUNTERS || (c = calloc(1, sizeof(*c) + len)) == NULL ||
            (c->cells = calloc(ncells, sizeof(*c->cells))) == NULL) {
            free(c);
            c = NULL;
            *err = "no memory";
        } else {
            for (size_t i = 0; i != ncells; ++i)
                atomic_init(&c->cells[i], 0);
            c->ncells = ncells;
            c->namelen = len;
            memcpy(c->name, name, len);
            *slot = c; /* linked only once complete: lookups hold the mutex anyway */
            ++counters.n;
        }
    }
    pthread_mutex_unlock(&counters.mutex);
    return c;
}

size_t sk_shared_counters_size(const sk_shared_counters_t *c)
{
    return c->ncells;
}

int64_t sk_shared_counters_add(sk_shared_counters_t *c, size_t i, int64_t delta)
{
    return atomic_fetch_add_explicit(&c->cells[i], delta, memory_order_relaxed) + delta;
}

int64_t sk_shared_counters_get(const sk_shared_counters_t *c, size_t i)
{
    return atomic_load_explicit(&c->cells[i], memory_order_relaxed);
}
