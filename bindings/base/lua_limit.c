/*
 * lua_limit.c: `limit`, process-wide rate limits on top of the shared store's GCRA buckets (shared_store.h). One
 * bucket per key for the whole process, whichever worker or VM takes from it, and C-owned so it survives reloads.
 * Never yields.
 *   limit.take(key, rate, burst[, cost = 1]) -> true, or false, retry_after_s
 * `rate` units per second refill a bucket of `burst` units that starts full; a take of `cost` units is admitted when
 * the bucket holds them. retry_after_s (a float) is how long until the same take would be admitted (math.huge when
 * cost > burst: never). Misuse raises: rate must be in [1e-6, 1e9], burst in [1, 1e6], cost in [0, 1e6] (bounds that
 * keep the bucket's µs arithmetic far from overflow).
 */
#include <lauxlib.h>
#include <string.h>
#include <time.h>
#include "../../core/metrics.h"
#include "../../core/binding.h"
#include "shared_store.h"

/* the store's table is shared with `shared.*`: a prefix no script writes by accident keeps the two apart */
#define KEY_PREFIX "\x01limit:"
#define MAX_KEY 1000

static sk_counter_t *fail_open;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int l_take(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    double rate = luaL_checknumber(L, 2), burst = luaL_checknumber(L, 3), cost = luaL_optnumber(L, 4, 1);
    luaL_argcheck(L, len <= MAX_KEY, 1, "key longer than 1000 bytes");
    /* written as negations so that NaN fails them too */
    luaL_argcheck(L, rate >= 1e-6 && rate <= 1e9, 2, "rate must be > 0 (and at most 1e9 per second)");
    luaL_argcheck(L, burst >= 1 && burst <= 1e6, 3, "burst must be >= 1 (and at most 1e6)");
    luaL_argcheck(L, cost >= 0 && cost <= 1e6, 4, "cost must be >= 0 (and at most 1e6)");

    char full[sizeof(KEY_PREFIX) - 1 + MAX_KEY];
    memcpy(full, KEY_PREFIX, sizeof(KEY_PREFIX) - 1);
    memcpy(full + sizeof(KEY_PREFIX) - 1, key, len);
    double retry_after;
    switch (sk_shared_take_rate(full, sizeof(KEY_PREFIX) - 1 + len, rate, burst, cost, now_us(), &retry_after)) {
    case 0:
        lua_pushboolean(L, 0);
        lua_pushnumber(L, retry_after);
        return 2;
    case -1:
        /* a full store must not turn into refusing every buyer: admit, and let the metric tell the operator to raise
         * shared.max_entries */
        if (fail_open != NULL) /* NULL only in a command-line mode, where init did not run */
            sk_counter_inc(fail_open);
        break;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int init(sk_config_t *cfg, unsigned nthreads)
{
    fail_open = sk_metrics_counter("seckilld_limit_fail_open_total",
                                   "limit.take calls admitted without a bucket because the shared store was full", "");
    return 0;
}

static void open_limit(lua_State *L)
{
    static const luaL_Reg fns[] = {{"take", l_take}, {NULL, NULL}};
    luaL_newlib(L, fns);
    lua_setglobal(L, "limit");
}

const sk_binding_t sk_binding_limit = {.name = "limit", .init = init, .open = open_limit};
