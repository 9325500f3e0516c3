/* metrics.c: the Redis family's series (metrics.h), created in the order /metrics has always listed them */
#include "metrics.h"

sk_redis_metrics_t sk_redis_metrics;

void sk_redis_metrics_init(void)
{
    static const double tries_bounds[] = {0, 1, 2, 3, 5, 8, 13, 21, 34};
    static const char cmd_help[] = "Redis commands by result (ok, error reply, failed: no reply)";
    sk_redis_metrics.commands.ok = sk_metrics_counter("seckilld_redis_commands_total", cmd_help, "result=\"ok\"");
    sk_redis_metrics.commands.error_reply = sk_metrics_counter("seckilld_redis_commands_total", cmd_help, "result=\"error\"");
    sk_redis_metrics.commands.failed = sk_metrics_counter("seckilld_redis_commands_total", cmd_help, "result=\"failed\"");
    sk_redis_metrics.connections = sk_metrics_gauge("seckilld_redis_connections", "Redis connections currently connected", "");
    sk_redis_metrics.connection_errors =
        sk_metrics_counter("seckilld_redis_connection_errors_total", "Redis connects that failed and connections dropped", "");
    sk_redis_metrics.reconnects = sk_metrics_counter("seckilld_redis_reconnects_total", "Redis reconnect attempts", "");
    sk_redis_metrics.lease_waits =
        sk_metrics_counter("seckilld_redis_pool_waits_total", "Redis lease requests that had to queue", "");
    sk_redis_metrics.lease_timeouts =
        sk_metrics_counter("seckilld_redis_pool_wait_timeouts_total", "Redis lease requests that timed out in the queue", "");
    sk_redis_metrics.lease_rejected =
        sk_metrics_counter("seckilld_redis_pool_rejected_total", "Redis lease requests refused: wait queue full", "");
    sk_redis_metrics.lease_wait_seconds = sk_metrics_histogram("seckilld_redis_pool_wait_seconds", "time queued for a Redis lease",
                                                               "", sk_metrics_latency_bounds, sk_metrics_latency_nbounds);
    sk_redis_metrics.lease_seconds = sk_metrics_histogram("seckilld_redis_lease_seconds", "time a Redis connection was leased", "",
                                                          sk_metrics_latency_bounds, sk_metrics_latency_nbounds);
    static const char tx_help[] = "redis.optimistic transactions by outcome";
    sk_redis_metrics.tx_ok = sk_metrics_counter("seckilld_redis_tx_total", tx_help, "result=\"ok\"");
    sk_redis_metrics.tx_readonly = sk_metrics_counter("seckilld_redis_tx_total", tx_help, "result=\"readonly\"");
    sk_redis_metrics.tx_conflict = sk_metrics_counter("seckilld_redis_tx_total", tx_help, "result=\"conflict\"");
    sk_redis_metrics.tx_error = sk_metrics_counter("seckilld_redis_tx_total", tx_help, "result=\"error\"");
    sk_redis_metrics.tx_attempts =
        sk_metrics_counter("seckilld_redis_tx_attempts_total", "redis.optimistic attempts (WATCH ... EXEC rounds)", "");
    sk_redis_metrics.tx_conflicts = sk_metrics_counter("seckilld_redis_tx_conflicts_total",
                                                       "redis.optimistic attempts whose EXEC found a WATCHed key changed", "");
    sk_redis_metrics.tx_retries = sk_metrics_histogram("seckilld_redis_tx_retries", "retries before a redis.optimistic success", "",
                                                       tries_bounds, sizeof(tries_bounds) / sizeof(tries_bounds[0]));
    sk_redis_metrics.gate_waits =
        sk_metrics_counter("seckilld_redis_gate_waits_total", "redis.optimistic transactions that queued behind their gate", "");
    sk_redis_metrics.gate_timeouts = sk_metrics_counter(
        "seckilld_redis_gate_timeouts_total", "redis.optimistic transactions that gave up waiting for their gate (busy)", "");
    sk_redis_metrics.gate_rejected = sk_metrics_counter(
        "seckilld_redis_gate_rejected_total", "redis.optimistic transactions refused: their gate's queue was full (busy)", "");
    sk_redis_metrics.gate_wait_seconds =
        sk_metrics_histogram("seckilld_redis_gate_wait_seconds", "time queued behind a redis.optimistic gate", "",
                             sk_metrics_latency_bounds, sk_metrics_latency_nbounds);
    sk_redis_metrics.tx_busy = sk_metrics_counter("seckilld_redis_tx_total", tx_help, "result=\"busy\"");
}

void sk_redis_metrics_cluster_init(void)
{
    static const char redir_help[] = "Redis Cluster redirections followed (MOVED: the slot moved; ASK: it is migrating)";
    sk_redis_metrics.cluster_moved = sk_metrics_counter("seckilld_redis_cluster_redirections_total", redir_help, "kind=\"moved\"");
    sk_redis_metrics.cluster_ask = sk_metrics_counter("seckilld_redis_cluster_redirections_total", redir_help, "kind=\"ask\"");
    sk_redis_metrics.cluster_retries =
        sk_metrics_counter("seckilld_redis_cluster_retries_total",
                           "Redis Cluster commands sent again after TRYAGAIN, CLUSTERDOWN or an unreachable node", "");
    static const char refresh_help[] = "Redis Cluster slot map refreshes (CLUSTER SLOTS) by result";
    sk_redis_metrics.cluster_refresh_ok =
        sk_metrics_counter("seckilld_redis_cluster_refreshes_total", refresh_help, "result=\"ok\"");
    sk_redis_metrics.cluster_refresh_failed =
        sk_metrics_counter("seckilld_redis_cluster_refreshes_total", refresh_help, "result=\"failed\"");
}
