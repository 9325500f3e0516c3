/*
 * cluster.h: a thread's view of a Redis Cluster: its slot map (cluster_map.h), a pool (pool.h) per node, and the
 * refresh of the map.
 *
 * The map is discovered at start-up with a blocking CLUSTER SLOTS on the main thread (sk_redis_cluster_discover,
 * the only blocking call), copied to every loop thread, and then kept by each thread on its own: a MOVED updates
 * one slot at once and asks for a refresh; a refresh sends CLUSTER SLOTS over a node's shared connection, never
 * blocking the loop, at most one in flight and one per SK_REDIS_CLUSTER_REFRESH_MS per thread (requests in between
 * are folded into one, sent when the interval ends). Node numbers never change within a thread, so pools are kept
 * by number and created on first use. No Lua here; route.h sends commands through it.
 */
#ifndef SK_REDIS_CLUSTER_H
#define SK_REDIS_CLUSTER_H

#include "cluster_map.h"
#include "pool.h"

/** the least time between two refreshes of one thread's map */
#define SK_REDIS_CLUSTER_REFRESH_MS 100
#define SK_REDIS_CLUSTER_MAX_SEEDS 16

typedef struct st_sk_redis_cluster_t sk_redis_cluster_t;

/** what redis+cluster://[:password@]host:port,host:port,...[/0] says, plus the pools' settings */
typedef struct st_sk_redis_cluster_config_t {
    /** every node's pool is made from this (ip and port replaced); db is always 0 */
    sk_redis_pool_config_t pool;
    size_t nseeds;
    struct {
        char ip[64];
        int port;
    } seeds[SK_REDIS_CLUSTER_MAX_SEEDS];
} sk_redis_cluster_config_t;

/** true if url names a cluster (redis+cluster://) */
int sk_redis_cluster_is_url(const char *url);
/** parses a redis+cluster:// url into cfg->seeds and cfg->pool.password, resolving the hosts (blocking: start-up
 * only). Returns 0, or -1 with a message in err. */
int sk_redis_cluster_parse_url(sk_redis_cluster_config_t *cfg, const char *url, char *err, size_t errlen);
/** asks the seeds in turn for CLUSTER SLOTS with blocking connections (start-up only): 0 with map filled, or -1
 * with why in err (map then holds the seeds as nodes and no slot, for the threads to refresh later) */
int sk_redis_cluster_discover(const sk_redis_cluster_config_t *cfg, sk_redis_cluster_map_t *map, char *err, size_t errlen);

/** a thread's cluster on loop, starting from the map discovered at start-up (copied) */
sk_redis_cluster_t *sk_redis_cluster_create(sk_loop_t *loop, const sk_redis_cluster_config_t *cfg,
                                            const sk_redis_cluster_map_t *map);
/** closes every node's pool and frees the cluster; from the loop, never inside hiredis */
void sk_redis_cluster_destroy(sk_redis_cluster_t *cluster);
/** the calling thread's cluster, or NULL (a single Redis, or a thread without one) */
sk_redis_cluster_t *sk_redis_cluster_default(void);
sk_loop_t *sk_redis_cluster_loop(sk_redis_cluster_t *cluster);

/** the pool of the master that owns slot (0..16383), or of any node for SK_REDIS_SLOT_NONE (round robin over the
 * masters, a connected one first); NULL if the map names no owner (a refresh is then asked for) */
sk_redis_pool_t *sk_redis_cluster_pool(sk_redis_cluster_t *cluster, int slot);
/** the pool of the node at ip:port (a MOVED or ASK target), made known if new; NULL if the map is full */
sk_redis_pool_t *sk_redis_cluster_pool_at(sk_redis_cluster_t *cluster, const char *ip, int port);
/** a MOVED: slot is now served by ip:port (the map changes at once) and a refresh is asked for */
void sk_redis_cluster_moved(sk_redis_cluster_t *cluster, int slot, const char *ip, int port);
/** asks for a refresh of the map (rate-limited, asynchronous; harmless to call often) */
void sk_redis_cluster_refresh(sk_redis_cluster_t *cluster);
/** this thread's map (read only) */
const sk_redis_cluster_map_t *sk_redis_cluster_map(sk_redis_cluster_t *cluster);

/** the failover generation (failover.h) that this thread's map is known to be at least as fresh as: the one noted
 * when its last successful refresh started */
uint32_t sk_redis_cluster_seen_generation(sk_redis_cluster_t *cluster);

#endif
