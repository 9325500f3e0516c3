/*
 * gate.c: the per-thread FIFO gates (gate.h): a small hash map key -> gate, each gate a holder count and a queue of
 * waiting entries with their timers.
 */
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "gate.h"
#include "metrics.h"

struct st_sk_redis_gate_t {
    sk_redis_gate_t *next; /* hash chain */
    uint64_t hash;
    unsigned holders;
    size_t nwaiting;
    h2o_linklist_t waiters; /* sk_redis_gate_entry_t._link, oldest first */
    size_t keylen;
    char key[1];
};

static __thread struct {
    sk_redis_gate_t **buckets; /* NULL while no gate exists */
    size_t nbuckets, count;
} gates;

/* ===== the map ===== */

static uint64_t hash_key(const char *key, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (size_t i = 0; i != len; ++i)
        h = (h ^ (unsigned char)key[i]) * 0x100000001b3ull;
    return h;
}

static sk_redis_gate_t **find_slot(uint64_t hash, const char *key, size_t len)
{
    sk_redis_gate_t **slot = &gates.buckets[hash & (gates.nbuckets - 1)];
    for (; *slot != NULL; slot = &(*slot)->next)
        if ((*slot)->hash == hash && (*slot)->keylen == len && memcmp((*slot)->key, key, len) == 0)
            break;
    return slot;
}

/* the gate of key on this thread, created empty if there is none */
static sk_redis_gate_t *get_gate(const char *key, size_t len)
{
    if (gates.buckets == NULL) {
        gates.nbuckets = 16;
        gates.buckets = h2o_mem_alloc(gates.nbuckets * sizeof(*gates.buckets));
        memset(gates.buckets, 0, gates.nbuckets * sizeof(*gates.buckets));
    }
    uint64_t hash = hash_key(key, len);
    sk_redis_gate_t **slot = find_slot(hash, key, len);
    if (*slot != NULL)
        return *slot;
    if (gates.count >= gates.nbuckets) {
        size_t n = gates.nbuckets * 2;
        sk_redis_gate_t **b = h2o_mem_alloc(n * sizeof(*b));
        memset(b, 0, n * sizeof(*b));
        for (size_t i = 0; i != gates.nbuckets; ++i)
            for (sk_redis_gate_t *g = gates.buckets[i], *next; g != NULL; g = next) {
                next = g->next;
                g->next = b[g->hash & (n - 1)];
                b[g->hash & (n - 1)] = g;
            }
        free(gates.buckets);
        gates.buckets = b;
        gates.nbuckets = n;
        slot = find_slot(hash, key, len);
    }
    /* never less than the struct: the compound literal below writes all of it, padding after key[1] included */
    size_t size = offsetof(sk_redis_gate_t, key) + len + 1;
    sk_redis_gate_t *g = h2o_mem_alloc(size < sizeof(*g) ? sizeof(*g) : size);
    *g = (sk_redis_gate_t){.hash = hash, .keylen = len};
    h2o_linklist_init_anchor(&g->waiters);
    memcpy(g->key, key, len);
    g->key[len] = '\0';
    *slot = g;
    ++gates.count;
    return g;
}

static void free_if_unused(sk_redis_gate_t *g)
{
    if (g->holders != 0 || !h2o_linklist_is_empty(&g->waiters))
        return;
    sk_redis_gate_t **slot = find_slot(g->hash, g->key, g->keylen);
    *slot = g->next;
    free(g);
    if (--gates.count == 0) {
        free(gates.buckets);
        gates.buckets = NULL;
        gates.nbuckets = 0;
    }
}

size_t sk_redis_gate_count(void)
{
    return gates.count;
}

/* ===== entering and leaving ===== */

static void on_granted(sk_deferred_t *d)
{
    sk_redis_gate_entry_t *entry = H2O_STRUCT_FROM_MEMBER(sk_redis_gate_entry_t, _granted, d);
    entry->cb(entry->op, entry, NULL);
}

/* hands free slots to the oldest waiters; each is told from the loop */
static void grant(sk_redis_gate_t *g)
{
    while (!h2o_linklist_is_empty(&g->waiters)) {
        sk_redis_gate_entry_t *w = H2O_STRUCT_FROM_MEMBER(sk_redis_gate_entry_t, _link, g->waiters.next);
        if (g->holders >= w->_width)
            break;
        h2o_linklist_unlink(&w->_link);
        --g->nwaiting;
        ++g->holders;
        w->_held = 1;
        sk_timer_stop(w->_loop, &w->_timer);
        sk_histogram_observe(sk_redis_metrics.gate_wait_seconds, (sk_now_ms() - w->_queued_at) / 1000.0);
        sk_loop_defer(w->_loop, &w->_granted, on_granted);
    }
}

static void on_timeout(sk_timer_t *timer)
{
    sk_redis_gate_entry_t *entry = H2O_STRUCT_FROM_MEMBER(sk_redis_gate_entry_t, _timer, timer);
    sk_counter_inc(sk_redis_metrics.gate_timeouts);
    sk_histogram_observe(sk_redis_metrics.gate_wait_seconds, (sk_now_ms() - entry->_queued_at) / 1000.0);
    sk_redis_gate_leave(entry);
    entry->cb(entry->op, entry, sk_redis_err_busy);
}

const char *sk_redis_gate_enter(sk_loop_t *loop, sk_redis_gate_entry_t *entry, sk_op_t *op, const char *key, size_t len,
                                const sk_redis_gate_limits_t *limits, sk_redis_gate_cb cb)
{
    sk_redis_gate_t *g = get_gate(key, len);
    entry->cb = cb;
    entry->op = op;
    entry->_loop = loop;
    entry->_width = limits->width;
    if (g->holders < limits->width && h2o_linklist_is_empty(&g->waiters)) {
        ++g->holders;
        entry->_gate = g;
        entry->_held = 1;
        return NULL; /* held at once: no cb */
    }
    if (g->nwaiting >= limits->queue) {
        sk_counter_inc(sk_redis_metrics.gate_rejected);
        free_if_unused(g);
        return sk_redis_err_busy;
    }
    entry->_gate = g;
    entry->_held = 0;
    entry->_queued_at = sk_now_ms();
    h2o_linklist_insert(&g->waiters, &entry->_link);
    ++g->nwaiting;
    sk_counter_inc(sk_redis_metrics.gate_waits);
    sk_timer_start(loop, &entry->_timer, limits->wait_ms, on_timeout);
    return NULL;
}

void sk_redis_gate_leave(sk_redis_gate_entry_t *entry)
{
    sk_redis_gate_t *g = entry->_gate;
    if (g == NULL)
        return;
    if (entry->_held) {
        --g->holders;
        sk_loop_cancel_defer(&entry->_granted); /* granted but not told yet */
    } else {
        h2o_linklist_unlink(&entry->_link);
        --g->nwaiting;
        sk_timer_stop(entry->_loop, &entry->_timer);
    }
    entry->_gate = NULL;
    entry->_held = 0;
    grant(g);
    free_if_unused(g);
}
