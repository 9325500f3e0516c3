/*
 * shared_store.h: a process-wide key/value store shared by every worker and VM, C-owned so that it survives
 * script reloads (OpenResty's lua_shared_dict, backed by process memory and striped mutexes). Values are nil,
 * booleans, numbers or strings; entries may expire. No Lua knowledge.
 */
#ifndef SK_SHARED_STORE_H
#define SK_SHARED_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef enum { SK_SHARED_NIL, SK_SHARED_BOOL, SK_SHARED_INT, SK_SHARED_NUM, SK_SHARED_STR } sk_shared_type_t;

typedef struct st_sk_shared_value_t {
    sk_shared_type_t type;
    union {
        int b;
        int64_t i;
        double n;
        struct {
            char *base; /* owned by the caller after sk_shared_get: free() it */
            size_t len;
        } s;
    };
} sk_shared_value_t;

/** sets the store's capacity (entries); call once before threads start. Default 65536. */
void sk_shared_init(size_t max_entries);
/** copies the value out; type NIL if absent or expired */
void sk_shared_get(const char *key, size_t keylen, sk_shared_value_t *out);
/** stores a copy (NIL deletes); ttl_ms 0 = no expiry. Returns 0, or -1 when the store is full. */
int sk_shared_set(const char *key, size_t keylen, const sk_shared_value_t *v, uint64_t ttl_ms);
/** adds delta to an integer entry atomically; an absent entry starts at init (ttl applies then). Returns 0 with the
 * new value in *result, -1 if the entry holds a non-integer, -2 when the store is full. */
int sk_shared_incr(const char *key, size_t keylen, int64_t delta, int64_t init, uint64_t ttl_ms, int64_t *result);
/**
 * Rate limiting with GCRA (the generic cell rate algorithm, a token bucket kept as one timestamp): the entry at key
 * holds the bucket's "theoretical arrival time" (TAT, µs on the caller's monotonic clock). Each unit costs
 * T = 1e6 / rate µs; a take of `cost` units at now_us is admitted iff max(TAT, now) + cost * T - now <= burst * T,
 * and then moves TAT there. The entry expires when the bucket would be full again, so idle keys free themselves.
 * One entry per key for the whole process: every worker and VM shares the bucket.
 * Returns 1 when admitted, 0 when refused with *retry_after_s the seconds until the same cost would be admitted
 * (INFINITY when cost > burst: never), -1 when the store is full (the caller decides; nothing was stored).
 * rate > 0, burst >= 1 and cost >= 0 are the caller's to check.
 */
int sk_shared_take_rate(const char *key, size_t keylen, double rate, double burst, double cost, uint64_t now_us,
                        double *retry_after_s);
/** number of live entries (approximate under concurrency) */
size_t sk_shared_count(void);

/**
 * Named counter arrays: process-wide arrays of int64 cells that never expire and are never freed (they live as long as
 * the process), apart from the key/value entries above. A caller resolves an array once (one mutex) and keeps the
 * pointer; each add or read after that is one atomic operation on a cell, with no lock and no hashing: for hot paths
 * that count per item. At most SK_SHARED_MAX_COUNTERS arrays.
 */
#define SK_SHARED_MAX_COUNTERS 16384
#define SK_SHARED_MAX_CELLS 256
typedef struct st_sk_shared_counters_t sk_shared_counters_t;
/** the array named name: with create, made (zeroed, ncells cells) if absent; without, NULL if absent. Sets *err and
 * returns NULL: "no memory" when SK_SHARED_MAX_COUNTERS arrays exist, "size mismatch" when the array exists with another
 * number of cells (create only; 1 <= ncells <= SK_SHARED_MAX_CELLS is the caller's to check). */
sk_shared_counters_t *sk_shared_counters(const char *name, size_t len, size_t ncells, int create, const char **err);
/** number of cells of an array */
size_t sk_shared_counters_size(const sk_shared_counters_t *c);
/** adds delta to cell i (0-based, < size) atomically; returns the new value */
int64_t sk_shared_counters_add(sk_shared_counters_t *c, size_t i, int64_t delta);
/** the value of cell i (an atomic load) */
int64_t sk_shared_counters_get(const sk_shared_counters_t *c, size_t i);

#endif
