/* err.c: the Redis family's error strings (err.h) */
#include "err.h"

const char sk_redis_err_connection[] = "connection failed";
const char sk_redis_err_connect_timeout[] = "connect timeout";
const char sk_redis_err_timeout[] = "timeout";
const char sk_redis_err_closed[] = "connection closed";
const char sk_redis_err_unavailable[] = "redis unavailable";
const char sk_redis_err_pool_timeout[] = "pool timeout";
const char sk_redis_err_pool_busy[] = "pool busy";
const char sk_redis_err_conflict[] = "conflict";
const char sk_redis_err_busy[] = "busy";
const char sk_redis_err_watch_failed[] = "watch failed";
const char sk_redis_err_redirects[] = "too many redirections";
