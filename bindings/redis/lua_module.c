/*
 * lua_module.c: the `redis` binding (bindings/redis/README.md documents its Lua API): reading the redis.* config,
 * the metrics and the health flag, a pool per loop thread, and the `redis` table every VM gets:
 *
 *   redis.call, redis.pipeline, redis.evalsha   lua_call.c
 *   redis.optimistic, redis.CONFLICT            lua_tx.c (its state machine: optimistic.c, its gate: gate.c)
 *   redis.slot, redis.slot_token, redis.cluster here (slot.c): where keys live, for the scripts' key layout
 *   redis.masters, redis.master_of              here (cluster_map.c): which master a key is on (books/loss.lua)
 *   redis.failover_pending, _generation, _settle  here (failover.c): slots paused after a failover, until the loss
 *                                               watcher has looked (sale/no_meta.lua, books/cluster.lua)
 */
#include <lauxlib.h>
#include <stdint.h>
#include <string.h>
#include "../../core/config.h"
#include "../../core/health.h"
#include "../../core/log.h"
#include "../../core/binding.h"
#include "lua_call.h"
#include "lua_eval.h"
#include "lua_tx.h"
#include "cluster.h"
#include "failover.h"
#include "metrics.h"
#include "pool.h"
#include "route.h"
#include "slot.h"

static sk_redis_pool_config_t pool_cfg;
/* redis+cluster:// only: the seeds and the map discovered at start-up, copied by every thread */
static int is_cluster;
static sk_redis_cluster_config_t cluster_cfg;
static sk_redis_cluster_map_t cluster_map;

/* ===== the binding ===== */

static int init(sk_config_t *cfg, unsigned nthreads)
{
    (void)nthreads;
    char err[256];
    const char *url = sk_config_string(cfg, "redis.url");
    is_cluster = sk_redis_cluster_is_url(url);
    if ((is_cluster ? sk_redis_cluster_parse_url(&cluster_cfg, url, err, sizeof(err))
                    : sk_redis_pool_parse_url(&pool_cfg, url, err, sizeof(err))) != 0) {
        sk_error("%s", err);
        return -1;
    }
    long long pool_size = sk_config_int(cfg, "redis.pool_size");
    pool_cfg.pool_size = pool_size < 1 ? 1 : pool_size > 64 ? 64 : (unsigned)pool_size;
    pool_cfg.lease_max =
        sk_config_isset(cfg, "redis.lease_size") ? (unsigned)sk_config_int(cfg, "redis.lease_size") : pool_cfg.pool_size * 4;
    if (pool_cfg.lease_max < 1)
        pool_cfg.lease_max = 1;
    pool_cfg.lease_queue = (unsigned)sk_config_int(cfg, "redis.lease_queue");
    pool_cfg.connect_timeout_ms = (uint64_t)sk_config_int(cfg, "redis.connect_timeout_ms");
    pool_cfg.command_timeout_ms = (uint64_t)sk_config_int(cfg, "redis.command_timeout_ms");
    pool_cfg.lease_wait_ms = (uint64_t)sk_config_int(cfg, "redis.lease_wait_ms");
    sk_redis_metrics_init();
    sk_redis_tx_init(cfg);
    (void)sk_redis_slot_token(0); /* the token table (redis.slot_token) now, on the main thread, not on a loop */
    sk_redis_metrics.health = sk_health_register("redis");
    if (is_cluster) {
        memcpy(pool_cfg.password, cluster_cfg.pool.password, sizeof(pool_cfg.password));
        cluster_cfg.pool = pool_cfg;
        sk_redis_metrics_cluster_init();
        /* the one blocking step: start-up, main thread. A cluster that cannot be asked now is asked again by every
         * thread as soon as one of its seeds answers (calls fail "redis unavailable" meanwhile). */
        if (sk_redis_cluster_discover(&cluster_cfg, &cluster_map, err, sizeof(err)) != 0)
            sk_warn("redis cluster: no slot map at start-up (%s); calls fail until a seed answers", err);
        size_t masters = 0;
        for (size_t i = 0; i != cluster_map.nnodes; ++i)
            masters += cluster_map.nodes[i].master;
        sk_info("redis cluster: %zu masters, %zu slots unserved, %u shared + up to %u leased connections per node and thread",
                masters, sk_redis_cluster_map_unowned(&cluster_map), pool_cfg.pool_size, pool_cfg.lease_max);
        return 0;
    }
    sk_info("redis: %s:%d db %d, %u shared + up to %u leased connections per thread", pool_cfg.ip, pool_cfg.port, pool_cfg.db,
            pool_cfg.pool_size, pool_cfg.lease_max);
    return 0;
}

static void thread_init(sk_loop_t *loop)
{
    if (is_cluster)
        sk_redis_cluster_create(loop, &cluster_cfg, &cluster_map);
    else
        sk_redis_pool_create(loop, &pool_cfg);
}

static void thread_dispose(sk_loop_t *loop)
{
    (void)loop;
    sk_redis_cluster_t *cluster = sk_redis_cluster_default();
    if (cluster != NULL) {
        sk_redis_route_dispose_thread();
        sk_redis_cluster_destroy(cluster);
    }
    sk_redis_pool_t *pool = sk_redis_pool_default();
    if (pool != NULL)
        sk_redis_pool_destroy(pool);
}

/* redis.slot(key) -> the key's cluster slot (its hash tag's), 0..16383 */
static int l_slot(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    lua_pushinteger(L, sk_redis_slot_of_key(key, len));
    return 1;
}

/* redis.slot_token(tag) -> the short token whose slot is that of the hash tag `tag` (a key "x{tag}y" and a key
 * "x{token}y" share a slot) */
static int l_slot_token(lua_State *L)
{
    size_t len;
    const char *tag = luaL_checklstring(L, 1, &len);
    lua_pushstring(L, sk_redis_slot_token(sk_redis_slot_crc16(tag, len) & (SK_REDIS_SLOTS - 1)));
    return 1;
}

/* redis.masters() -> a slot token per master of this thread's map (the token of the first slot it owns), in slot
 * order: a key tagged {token} lives on that master. A single Redis: one token. */
static int l_masters(lua_State *L)
{
    sk_redis_cluster_t *cluster = sk_redis_cluster_default();
    int firsts[SK_REDIS_CLUSTER_MAX_NODES];
    size_t n = 1;
    firsts[0] = 0;
    if (cluster != NULL)
        n = sk_redis_cluster_map_masters(sk_redis_cluster_map(cluster), firsts, SK_REDIS_CLUSTER_MAX_NODES);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i != n; ++i) {
        lua_pushstring(L, sk_redis_slot_token(firsts[i]));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* redis.master_of(key) -> the token (as redis.masters lists it) of the master that owns key's slot, or nil when no
 * master serves it in this thread's map. A single Redis: the one token. */
static int l_master_of(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    sk_redis_cluster_t *cluster = sk_redis_cluster_default();
    int slot = 0;
    if (cluster != NULL &&
        (slot = sk_redis_cluster_map_master_slot(sk_redis_cluster_map(cluster), sk_redis_slot_of_key(key, len))) < 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushstring(L, sk_redis_slot_token(slot));
    return 1;
}

/* redis.failover_pending(key) -> true while key's slot failed over to a replica (this process's slot maps saw it)
 * and the loss watcher has not compared the masters since (failover.h); always false on a single Redis */
static int l_failover_pending(lua_State *L)
{
    size_t len;
    const char *key = luaL_checklstring(L, 1, &len);
    lua_pushboolean(L, is_cluster && sk_redis_failover_pending(sk_redis_slot_of_key(key, len)));
    return 1;
}

/* redis.failover_generation() -> the newest failover generation noted in this process (0: none) that this thread's
 * map has caught up with; the loss watcher reads it before a round and hands it to redis.failover_settle(gen) once
 * the round found every epoch in place */
static int l_failover_generation(lua_State *L)
{
    /* no newer than this thread's map: a round surveyed on a map older than a failover must not settle it (its INFO
     * would still reach the old master, alive behind a partition) */
    uint32_t gen = sk_redis_failover_generation();
    sk_redis_cluster_t *cluster = sk_redis_cluster_default();
    if (cluster != NULL && sk_redis_cluster_seen_generation(cluster) < gen)
        gen = sk_redis_cluster_seen_generation(cluster);
    lua_pushinteger(L, gen);
    return 1;
}

static int l_failover_settle(lua_State *L)
{
    lua_Integer gen = luaL_checkinteger(L, 1);
    luaL_argcheck(L, gen >= 0 && gen <= UINT32_MAX, 1, "a generation from redis.failover_generation()");
    sk_redis_failover_settle((uint32_t)gen);
    return 0;
}

static void open_module(lua_State *L)
{
    lua_createtable(L, 0, 15);
    sk_redis_call_open(L);
    sk_redis_eval_open(L);
    sk_redis_tx_open(L);
    lua_pushcfunction(L, l_slot);
    lua_setfield(L, -2, "slot");
    lua_pushcfunction(L, l_slot_token);
    lua_setfield(L, -2, "slot_token");
    lua_pushcfunction(L, l_masters);
    lua_setfield(L, -2, "masters");
    lua_pushcfunction(L, l_master_of);
    lua_setfield(L, -2, "master_of");
    lua_pushcfunction(L, l_failover_pending);
    lua_setfield(L, -2, "failover_pending");
    lua_pushcfunction(L, l_failover_generation);
    lua_setfield(L, -2, "failover_generation");
    lua_pushcfunction(L, l_failover_settle);
    lua_setfield(L, -2, "failover_settle");
    lua_pushboolean(L, is_cluster);
    lua_setfield(L, -2, "cluster");
    lua_setglobal(L, "redis");
}

/* every key init reads (here and in lua_tx.c) */
static const sk_config_key_t redis_keys[] = {
    SK_CONF_RANGED("url", SK_CONF_STRING, 1, 4096, .def = "redis://127.0.0.1:6379/0", .env = "SECKILLD_REDIS",
                   .help = "redis://[:password@]host:port/db, or a cluster's seeds: redis+cluster://h1:p1,h2:p2"),
    SK_CONF_RANGED("pool_size", SK_CONF_INT, 1, 64, .def = "4", .help = "shared connections per thread (and per node)"),
    /* computed when unset: 4 x pool_size (init) */
    SK_CONF_RANGED("lease_size", SK_CONF_INT, 1, 4096,
                   .help = "leased connections (transactions) per thread; unset: 4 x pool_size"),
    SK_CONF_RANGED("lease_queue", SK_CONF_INT, 0, 1000000, .def = "1024",
                   .help = "calls waiting for a leased connection at most, else pool busy"),
    SK_CONF_RANGED("connect_timeout_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "1000", .help = "a connection attempt's limit"),
    SK_CONF_RANGED("command_timeout_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "1000", .help = "a command's limit"),
    SK_CONF_RANGED("lease_wait_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "1000",
                   .help = "how long a call waits for a leased connection"),
    SK_CONF_RANGED("tries", SK_CONF_INT, 1, 1000, .def = "16", .help = "tries of an optimistic transaction (WATCH conflicts)"),
    SK_CONF_RANGED("backoff_max_ms", SK_CONF_INT, 1, 1000, .def = "64", .help = "the cap of the jittered pause between two tries"),
    SK_CONF_RANGED("gate_backoff_max_ms", SK_CONF_INT, 1, 1000, .def = "2", .help = "the same, while holding a gate"),
    SK_CONF_RANGED("gate_wait_ms", SK_CONF_INT, 1, SK_CONF_MS_DAY, .def = "1000",
                   .help = "how long a transaction waits at its gate, else busy"),
    SK_CONF_RANGED("gate_queue", SK_CONF_INT, 0, 1000000, .def = "4096",
                   .help = "transactions waiting at a gate at most, else busy"),
    {NULL},
};
static const sk_config_key_t config_keys[] = {{.name = "redis", .types = SK_CONF_TABLE, .keys = redis_keys}, {NULL}};

const sk_binding_t sk_binding_redis = {
    .name = "redis",
    .init = init,
    .thread_init = thread_init,
    .open = open_module,
    .thread_dispose = thread_dispose,
    .config_keys = config_keys,
};
