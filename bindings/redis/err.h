/*
 * err.h: every error the Redis family reports, as h2o reports h2o_socket_error_closed: an exported string compared
 * by pointer inside C (`if (errstr == sk_redis_err_closed)`), whose text is what Lua sees as `nil, err`. The texts
 * are stable (scripts and tests compare them); bindings/redis/README.md lists when each happens.
 */
#ifndef SK_REDIS_ERR_H
#define SK_REDIS_ERR_H

/** "connection failed": a connect failed, or the connection's set-up (AUTH, SELECT) was refused */
extern const char sk_redis_err_connection[];
/** "connect timeout": no connection within connect_timeout_ms */
extern const char sk_redis_err_connect_timeout[];
/** "timeout": a command had no reply within command_timeout_ms; its connection was dropped */
extern const char sk_redis_err_timeout[];
/** "connection closed": the connection went away with the command unanswered */
extern const char sk_redis_err_closed[];
/** "redis unavailable": no usable connection right now (Redis is down); fails fast */
extern const char sk_redis_err_unavailable[];
/** "pool timeout": a lease request waited lease_wait_ms */
extern const char sk_redis_err_pool_timeout[];
/** "pool busy": a lease request found lease_queue requests already waiting */
extern const char sk_redis_err_pool_busy[];
/** "conflict": an optimistic transaction found its WATCHed keys changed on every try */
extern const char sk_redis_err_conflict[];
/** "busy": an optimistic transaction refused by its gate (waited gate_wait_ms, or the gate's queue was full) */
extern const char sk_redis_err_busy[];
/** "watch failed": Redis answered an optimistic transaction's WATCH with an error */
extern const char sk_redis_err_watch_failed[];
/** "too many redirections": a Redis Cluster kept answering MOVED/ASK (route.h) */
extern const char sk_redis_err_redirects[];

#endif
