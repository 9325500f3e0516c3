/*
 * metrics.h: the Redis family's metrics (process-wide series every thread updates) and its /healthz flag.
 * bindings/redis/README.md lists them. No Lua here.
 */
#ifndef SK_REDIS_METRICS_H
#define SK_REDIS_METRICS_H

#include "../../core/metrics.h"
#include "conn.h"

/** every series of the family; NULL pointers until sk_redis_metrics_init */
typedef struct st_sk_redis_metrics_t {
    /** seckilld_redis_commands_total{result}: every connection points its stats here */
    sk_redis_conn_stats_t commands;
    sk_counter_t *connections, *connection_errors, *reconnects;
    /** the lease queue (lease.c) and the leases (pool.c) */
    sk_counter_t *lease_waits, *lease_timeouts, *lease_rejected;
    sk_histogram_t *lease_wait_seconds, *lease_seconds;
    /** optimistic transactions (optimistic.c) */
    sk_counter_t *tx_ok, *tx_readonly, *tx_conflict, *tx_error, *tx_busy, *tx_attempts, *tx_conflicts;
    sk_histogram_t *tx_retries;
    /** the per-key gate (gate.c) */
    sk_counter_t *gate_waits, *gate_timeouts, *gate_rejected;
    sk_histogram_t *gate_wait_seconds;
    /** Redis Cluster (cluster.c, route.c, optimistic.c): NULL until sk_redis_metrics_cluster_init */
    sk_counter_t *cluster_moved, *cluster_ask, *cluster_retries, *cluster_refresh_ok, *cluster_refresh_failed;
    /** the "redis" part of /healthz: 1 while any connection of any thread is connected (NULL: not registered) */
    _Atomic int *health;
} sk_redis_metrics_t;

/** the family's series */
extern sk_redis_metrics_t sk_redis_metrics;

/** creates the series; once per process, at start-up, before any pool or transaction (unit tests call it too). It
 * does not register the health flag: the binding does that. */
void sk_redis_metrics_init(void);
/** creates the cluster's series (redirections, retries, map refreshes); once, after sk_redis_metrics_init, only when
 * redis.url names a cluster */
void sk_redis_metrics_cluster_init(void);

#endif
