/*
 * cluster.c: a thread's Redis Cluster (cluster.h): the url, the blocking discovery at start-up, the pools per
 * node, the asynchronous refresh of the map and the health flag.
 *
 * Invariants: pools[i] belongs to map.nodes[i] (same number) and is created on first use; node numbers only grow,
 * so a pool outlives the node's mastership (a demoted or resharded-away node keeps its connections; they are few).
 * The refresh's CLUSTER SLOTS is the cluster's own command (op = &refresh_op, no coroutine waits on it).
 */
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include "../../core/log.h"
#include "cluster.h"
#include "failover.h"
#include "metrics.h"

/* how often each thread checks that every master is reachable (the health flag; a refresh if one is not) */
#define HEALTH_MS 500
/* and refreshes its map all the same, every this many checks: the replicas it knows (a failover is told by them)
 * change without any command of ours noticing, e.g. a failed master coming back as its replica's replica */
#define REFRESH_EVERY_CHECKS 10

struct st_sk_redis_cluster_t {
    sk_loop_t *loop;
    sk_redis_cluster_config_t cfg;
    sk_redis_cluster_map_t map;
    sk_redis_pool_t *pools[SK_REDIS_CLUSTER_MAX_NODES];
    size_t any_cursor, refresh_cursor;
    /* the refresh: one in flight at most, one per SK_REDIS_CLUSTER_REFRESH_MS */
    sk_op_t refresh_op;
    int refreshing, refresh_wanted, destroying;
    size_t refresh_node; /* the node asked (its ip fills an empty one in the reply) */
    uint64_t last_refresh_ms;
    sk_timer_t refresh_timer, health_timer;
    unsigned checks;
    /* the failover generation (failover.h) when the refresh in flight started, and when the map's last one did: a
     * map refreshed since generation G was noted names the masters that took over by then */
    uint32_t refresh_generation, seen_generation;
};

static __thread sk_redis_cluster_t *default_cluster;

/* ===== url and discovery (start-up, main thread) ===== */

int sk_redis_cluster_is_url(const char *url)
{
    return strncasecmp(url, "redis+cluster://", 16) == 0;
}

static int resolve(const char *host, char *ip, size_t iplen)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    if (getaddrinfo(host, NULL, &hints, &res) != 0)
        return -1;
    getnameinfo(res->ai_addr, res->ai_addrlen, ip, iplen, NULL, 0, NI_NUMERICHOST);
    freeaddrinfo(res);
    return 0;
}

int sk_redis_cluster_parse_url(sk_redis_cluster_config_t *cfg, const char *url, char *err, size_t errlen)
{
    const char *rest = url + 16, *at = strchr(rest, '@');
    cfg->nseeds = 0;
    cfg->pool.password[0] = '\0';
    cfg->pool.db = 0;
    if (at != NULL) {
        const char *colon = memchr(rest, ':', at - rest), *pw = colon != NULL ? colon + 1 : rest;
        snprintf(cfg->pool.password, sizeof(cfg->pool.password), "%.*s", (int)(at - pw), pw);
        rest = at + 1;
    }
    size_t hostslen = strcspn(rest, "/");
    if (rest[hostslen] == '/' && rest[hostslen + 1] != '\0' && strcmp(rest + hostslen, "/0") != 0) {
        snprintf(err, errlen, "redis.url: a cluster has database 0 only (\"%s\")", url);
        return -1;
    }
    for (const char *p = rest, *end = rest + hostslen; p < end;) {
        size_t len = strcspn(p, ",/");
        char host[256];
        const char *colon = memchr(p, ':', len);
        char *pend;
        long port = colon != NULL ? strtol(colon + 1, &pend, 10) : 6379;
        size_t hostlen = colon != NULL ? (size_t)(colon - p) : len;
        if (hostlen == 0 || hostlen >= sizeof(host) || (colon != NULL && pend != p + len) || port <= 0 || port > 65535 ||
            cfg->nseeds == SK_REDIS_CLUSTER_MAX_SEEDS) {
            snprintf(err, errlen, "redis.url: bad node \"%.*s\" in \"%s\" (host:port, %d at most)", (int)len, p, url,
                     SK_REDIS_CLUSTER_MAX_SEEDS);
            return -1;
        }
        memcpy(host, p, hostlen);
        host[hostlen] = '\0';
        if (resolve(host, cfg->seeds[cfg->nseeds].ip, sizeof(cfg->seeds[0].ip)) != 0) {
            snprintf(err, errlen, "redis.url: cannot resolve \"%s\"", host);
            return -1;
        }
        cfg->seeds[cfg->nseeds++].port = (int)port;
        p += len + 1;
    }
    if (cfg->nseeds == 0) {
        snprintf(err, errlen, "redis.url: no node in \"%s\"", url);
        return -1;
    }
    return 0;
}

int sk_redis_cluster_discover(const sk_redis_cluster_config_t *cfg, sk_redis_cluster_map_t *map, char *err, size_t errlen)
{
    snprintf(err, errlen, "no seed answered");
    for (size_t i = 0; i != cfg->nseeds; ++i) {
        uint64_t ms = cfg->pool.connect_timeout_ms;
        struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
        redisContext *c = redisConnectWithTimeout(cfg->seeds[i].ip, cfg->seeds[i].port, tv);
        if (c == NULL || c->err != 0) {
            snprintf(err, errlen, "%s:%d: %s", cfg->seeds[i].ip, cfg->seeds[i].port, c != NULL ? c->errstr : "out of memory");
            if (c != NULL)
                redisFree(c);
            continue;
        }
        redisSetTimeout(c, tv);
        redisReply *r = NULL;
        if (cfg->pool.password[0] != '\0')
            r = redisCommand(c, "AUTH %s", cfg->pool.password);
        if (cfg->pool.password[0] == '\0' || (r != NULL && r->type != REDIS_REPLY_ERROR)) {
            if (r != NULL)
                freeReplyObject(r);
            r = redisCommand(c, "CLUSTER SLOTS");
        }
        char why[192];
        int ret = r != NULL ? sk_redis_cluster_map_from_reply(map, NULL, r, cfg->seeds[i].ip, why, sizeof(why)) : -1;
        if (ret != 0)
            snprintf(err, errlen, "%s:%d: %s", cfg->seeds[i].ip, cfg->seeds[i].port, r != NULL ? why : c->errstr);
        if (r != NULL)
            freeReplyObject(r);
        redisFree(c);
        if (ret == 0)
            return 0;
    }
    /* nobody answered: start with the seeds and no slot; the threads refresh when a call finds no owner */
    sk_redis_cluster_map_init(map);
    for (size_t i = 0; i != cfg->nseeds; ++i)
        sk_redis_cluster_map_node(map, cfg->seeds[i].ip, cfg->seeds[i].port, 1);
    return -1;
}

/* ===== pools per node ===== */

static sk_redis_pool_t *node_pool(sk_redis_cluster_t *cluster, size_t node)
{
    if (cluster->pools[node] == NULL) {
        sk_redis_pool_config_t pc = cluster->cfg.pool;
        snprintf(pc.ip, sizeof(pc.ip), "%s", cluster->map.nodes[node].ip);
        pc.port = cluster->map.nodes[node].port;
        pc.db = 0;
        pc.cluster_node = 1;
        cluster->pools[node] = sk_redis_pool_create(cluster->loop, &pc);
    }
    return cluster->pools[node];
}

sk_redis_pool_t *sk_redis_cluster_pool(sk_redis_cluster_t *cluster, int slot)
{
    if (slot >= 0) {
        uint16_t node = cluster->map.owner[slot];
        if (node != SK_REDIS_CLUSTER_NO_NODE)
            return node_pool(cluster, node);
        sk_redis_cluster_refresh(cluster);
        return NULL;
    }
    /* no key: a connected master, round robin; else the first master; a node that owns nothing only before
     * discovery (the seeds) */
    int has_master = 0;
    for (size_t i = 0; i != cluster->map.nnodes; ++i)
        has_master |= cluster->map.nodes[i].master;
    sk_redis_pool_t *fallback = NULL;
    for (size_t i = 0; i != cluster->map.nnodes; ++i) {
        size_t node = (cluster->any_cursor + i) % cluster->map.nnodes;
        if (has_master && !cluster->map.nodes[node].master)
            continue;
        sk_redis_pool_t *pool = node_pool(cluster, node);
        if (sk_redis_pool_is_up(pool)) {
            cluster->any_cursor = node + 1;
            return pool;
        }
        if (fallback == NULL)
            fallback = pool;
    }
    return fallback;
}

sk_redis_pool_t *sk_redis_cluster_pool_at(sk_redis_cluster_t *cluster, const char *ip, int port)
{
    int node = sk_redis_cluster_map_node(&cluster->map, ip, port, 1);
    return node < 0 ? NULL : node_pool(cluster, (size_t)node);
}

/* the nodes of the map whose pool is down (connections lost, reconnecting): an owner down whose slots went to
 * another node failed over (a reshard needs the owner alive) */
static void nodes_down(sk_redis_cluster_t *cluster, uint8_t *down)
{
    for (size_t i = 0; i != cluster->map.nnodes; ++i)
        down[i] = cluster->pools[i] != NULL && !sk_redis_pool_is_up(cluster->pools[i]);
}

void sk_redis_cluster_moved(sk_redis_cluster_t *cluster, int slot, const char *ip, int port)
{
    uint8_t down[SK_REDIS_CLUSTER_MAX_NODES];
    nodes_down(cluster, down);
    int node = sk_redis_cluster_map_node(&cluster->map, ip, port, 1);
    if (node >= 0) {
        if (sk_redis_cluster_map_is_failover(&cluster->map, slot, ip, port, down)) {
            sk_redis_failover_note(NULL, slot);
            sk_warn("redis cluster: slot %d failed over to %s:%d (MOVED); its items pause until the loss watcher has "
                    "compared the masters",
                    slot, ip, port);
        }
        sk_redis_cluster_map_set(&cluster->map, slot, node);
    }
    sk_redis_cluster_refresh(cluster);
}

const sk_redis_cluster_map_t *sk_redis_cluster_map(sk_redis_cluster_t *cluster)
{
    return &cluster->map;
}

sk_loop_t *sk_redis_cluster_loop(sk_redis_cluster_t *cluster)
{
    return cluster->loop;
}

uint32_t sk_redis_cluster_seen_generation(sk_redis_cluster_t *cluster)
{
    return cluster->seen_generation;
}

/* ===== the refresh ===== */

static void start_refresh(sk_redis_cluster_t *cluster);
static void on_refresh_timer(sk_timer_t *timer);

static void on_slots_reply(sk_op_t *op, redisReply *reply, const char *errstr)
{
    sk_redis_cluster_t *cluster = H2O_STRUCT_FROM_MEMBER(sk_redis_cluster_t, refresh_op, op);
    (void)errstr;
    cluster->refreshing = 0;
    if (cluster->destroying)
        return;
    char err[192];
    sk_redis_cluster_map_t *next = h2o_mem_alloc(sizeof(*next));
    if (reply != NULL && sk_redis_cluster_map_from_reply(next, &cluster->map, reply, cluster->map.nodes[cluster->refresh_node].ip,
                                                         err, sizeof(err)) == 0) {
        /* a replica now owning its master's slots: a failover, which may have lost the master's last writes; the
         * sale pauses those slots until the loss watcher has looked (failover.h) */
        uint8_t failed_over[SK_REDIS_SLOTS], down[SK_REDIS_CLUSTER_MAX_NODES];
        int from = 0, to = 0;
        nodes_down(cluster, down);
        size_t n = sk_redis_cluster_map_failovers(&cluster->map, next, down, failed_over, &from, &to);
        if (n != 0) {
            sk_redis_failover_note(failed_over, 0);
            sk_warn("redis cluster: %zu slot(s) of %s:%d failed over to %s:%d; their items pause until the loss watcher "
                    "has compared the masters",
                    n, cluster->map.nodes[from].ip, cluster->map.nodes[from].port, next->nodes[to].ip, next->nodes[to].port);
        }
        /* node numbers are kept (from_reply copies ours first), so the pools stay where they are */
        memcpy(&cluster->map, next, sizeof(*next));
        cluster->seen_generation = cluster->refresh_generation;
        sk_counter_inc(sk_redis_metrics.cluster_refresh_ok);
    } else {
        sk_counter_inc(sk_redis_metrics.cluster_refresh_failed);
        sk_warn("redis cluster: refreshing the slot map from %s:%d failed: %s", cluster->map.nodes[cluster->refresh_node].ip,
                cluster->map.nodes[cluster->refresh_node].port, reply != NULL ? err : errstr);
        cluster->refresh_wanted = 1; /* ask another node, after the interval */
    }
    free(next);
    if (cluster->refresh_wanted)
        sk_redis_cluster_refresh(cluster);
}

/* CLUSTER SLOTS to the next node (round robin) that can take a command now */
static void start_refresh(sk_redis_cluster_t *cluster)
{
    cluster->refresh_wanted = 0;
    cluster->last_refresh_ms = sk_now_ms();
    cluster->refresh_generation = sk_redis_failover_generation();
    static const char *argv[] = {"CLUSTER", "SLOTS"};
    static const size_t lens[] = {7, 5};
    for (size_t i = 0; i != cluster->map.nnodes; ++i) {
        size_t node = (cluster->refresh_cursor + i) % cluster->map.nnodes;
        sk_redis_pool_t *pool = node_pool(cluster, node);
        if (!sk_redis_pool_is_up(pool))
            continue;
        if (sk_redis_pool_command(pool, &cluster->refresh_op, 2, argv, lens, on_slots_reply) == NULL) {
            cluster->refreshing = 1;
            cluster->refresh_node = node;
            cluster->refresh_cursor = node + 1;
            return;
        }
    }
    /* no node is connected right now: the pools reconnect by themselves; try again after the interval */
    sk_counter_inc(sk_redis_metrics.cluster_refresh_failed);
    cluster->refresh_wanted = 1;
    sk_timer_start(cluster->loop, &cluster->refresh_timer, SK_REDIS_CLUSTER_REFRESH_MS * 5, on_refresh_timer);
}

static void on_refresh_timer(sk_timer_t *timer)
{
    sk_redis_cluster_t *cluster = H2O_STRUCT_FROM_MEMBER(sk_redis_cluster_t, refresh_timer, timer);
    if (cluster->refresh_wanted && !cluster->refreshing)
        start_refresh(cluster);
}

void sk_redis_cluster_refresh(sk_redis_cluster_t *cluster)
{
    cluster->refresh_wanted = 1;
    if (cluster->refreshing || sk_timer_is_active(&cluster->refresh_timer))
        return; /* folded into the one in flight's follow-up, or into the pending one */
    uint64_t now = sk_now_ms(), next = cluster->last_refresh_ms + SK_REDIS_CLUSTER_REFRESH_MS;
    /* never from the caller's stack (it may be inside a hiredis callback of the node it would ask): from the timer */
    sk_timer_start(cluster->loop, &cluster->refresh_timer, next > now ? next - now : 0, on_refresh_timer);
}

/* ===== health: every master reachable ===== */

static void on_health_timer(sk_timer_t *timer)
{
    sk_redis_cluster_t *cluster = H2O_STRUCT_FROM_MEMBER(sk_redis_cluster_t, health_timer, timer);
    int up = cluster->map.nnodes != 0;
    for (size_t i = 0; i != cluster->map.nnodes; ++i)
        if (cluster->map.nodes[i].master && !sk_redis_pool_is_up(node_pool(cluster, i)))
            up = 0;
    up = up && sk_redis_cluster_map_unowned(&cluster->map) == 0;
    if (sk_redis_metrics.health != NULL)
        atomic_store(sk_redis_metrics.health, up);
    /* a master may have been replaced; another thread saw a failover this map may not show yet; or it is time */
    if (!up || sk_redis_failover_generation() > cluster->seen_generation || ++cluster->checks % REFRESH_EVERY_CHECKS == 0)
        sk_redis_cluster_refresh(cluster);
    sk_timer_start(cluster->loop, &cluster->health_timer, HEALTH_MS, on_health_timer);
}

/* ===== life cycle ===== */

sk_redis_cluster_t *sk_redis_cluster_create(sk_loop_t *loop, const sk_redis_cluster_config_t *cfg,
                                            const sk_redis_cluster_map_t *map)
{
    sk_redis_cluster_t *cluster = h2o_mem_alloc(sizeof(*cluster));
    memset(cluster, 0, sizeof(*cluster));
    cluster->loop = loop;
    cluster->cfg = *cfg;
    cluster->map = *map;
    /* connect to every master now, as a single Redis's pool does: the first requests find connections ready */
    for (size_t i = 0; i != cluster->map.nnodes; ++i)
        if (cluster->map.nodes[i].master)
            node_pool(cluster, i);
    if (sk_redis_cluster_map_unowned(&cluster->map) != 0)
        sk_redis_cluster_refresh(cluster);
    sk_timer_start(loop, &cluster->health_timer, HEALTH_MS, on_health_timer);
    if (default_cluster == NULL)
        default_cluster = cluster;
    return cluster;
}

void sk_redis_cluster_destroy(sk_redis_cluster_t *cluster)
{
    cluster->destroying = 1;
    sk_timer_stop(cluster->loop, &cluster->refresh_timer);
    sk_timer_stop(cluster->loop, &cluster->health_timer);
    for (size_t i = 0; i != SK_REDIS_CLUSTER_MAX_NODES; ++i)
        if (cluster->pools[i] != NULL)
            sk_redis_pool_destroy(cluster->pools[i]);
    if (default_cluster == cluster)
        default_cluster = NULL;
    free(cluster);
}

sk_redis_cluster_t *sk_redis_cluster_default(void)
{
    return default_cluster;
}
