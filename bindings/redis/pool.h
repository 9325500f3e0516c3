/*
 * pool.h: a worker's connections to one Redis server.
 *
 * Two lanes (architecture anchors §8.5):
 *   - shared connections (pool_size of them) that every plain command is pipelined over; they connect eagerly and
 *     reconnect with backoff forever, so a Redis that is down at start-up or restarts is picked up by itself;
 *   - leased connections, handed exclusively to one caller (WATCH/MULTI/EXEC, blocking commands) up to lease_max,
 *     with a bounded FIFO of waiters that time out after lease_wait_ms (lease.h).
 * A leased connection comes back through sk_redis_pool_release with what the caller may have left on it (WATCHes,
 * an open MULTI, unanswered replies); the pool cleans it with DISCARD/UNWATCH before the next lease, or closes it.
 * It is never handed out dirty. No Lua knowledge here.
 */
#ifndef SK_REDIS_POOL_H
#define SK_REDIS_POOL_H

#include "conn.h"
#include "lease.h"

typedef struct st_sk_redis_pool_t sk_redis_pool_t;

/** what a pool connects to and how; parsed once from redis.url and friends */
typedef struct st_sk_redis_pool_config_t {
    char ip[64]; /* numeric, resolved once at start-up */
    int port;
    int db;
    char password[128];   /* empty: no AUTH */
    unsigned pool_size;   /* shared pipelined connections */
    unsigned lease_max;   /* exclusive connections at most */
    unsigned lease_queue; /* waiters at most when every lease connection is taken */
    uint64_t connect_timeout_ms, command_timeout_ms, lease_wait_ms;
    /** a node of a cluster (cluster.h): never the thread's default pool, and the health flag is the cluster's */
    int cluster_node;
} sk_redis_pool_config_t;

/** what a caller hands back with a leased connection: the state it may have left */
enum {
    SK_REDIS_DIRTY_WATCH = 1, /* WATCH sent and not ended by EXEC/UNWATCH */
    SK_REDIS_DIRTY_MULTI = 2, /* MULTI sent and not ended by EXEC/DISCARD */
};

/** parses redis://[:password@]host[:port][/db] and resolves host (blocking getaddrinfo: start-up only). Returns 0,
 * or -1 with a message in err. */
int sk_redis_pool_parse_url(sk_redis_pool_config_t *cfg, const char *url, char *err, size_t errlen);

/** creates a pool on the calling thread's loop and starts connecting its shared connections */
sk_redis_pool_t *sk_redis_pool_create(sk_loop_t *loop, const sk_redis_pool_config_t *cfg);
/** closes every connection (pending commands fail) and frees the pool; from the loop, never inside hiredis */
void sk_redis_pool_destroy(sk_redis_pool_t *pool);

/** the calling thread's pool for the configured server (NULL on a thread without one) */
sk_redis_pool_t *sk_redis_pool_default(void);

/** pipelines one command for op over a shared connection. Returns NULL when sent (cb(op, reply, errstr) will be
 * called exactly once), or the error (cb is not called) when no connection can take it now, e.g.
 * sk_redis_err_unavailable while Redis is down. This is the C API other bindings may use. */
const char *sk_redis_pool_command(sk_redis_pool_t *pool, sk_op_t *op, int argc, const char **argv, const size_t *lens,
                                  sk_redis_reply_cb cb);
/** the shared connection sk_redis_pool_command would use next (to pipeline several commands on one connection), or
 * NULL if none can take commands */
sk_redis_conn_t *sk_redis_pool_shared(sk_redis_pool_t *pool);

/** asks for an exclusive connection for op, in core/op.h's shape. Returns NULL with *conn set when one is available
 * at once (the fast path: cb is not called); NULL with *conn NULL when the request was queued in lease
 * (cb(op, conn, errstr) will be called exactly once; sk_redis_lease_cancel withdraws it); or the error, *conn NULL and
 * cb never called: sk_redis_err_unavailable (Redis is down), sk_redis_err_pool_busy (lease_queue requests wait). */
const char *sk_redis_pool_lease(sk_redis_pool_t *pool, sk_redis_lease_t *lease, sk_op_t *op, sk_redis_lease_cb cb,
                                sk_redis_conn_t **conn);
/** returns a leased connection; dirty is a mask of SK_REDIS_DIRTY_*. Unanswered commands also count as dirty. */
void sk_redis_pool_release(sk_redis_pool_t *pool, sk_redis_conn_t *conn, int dirty);

/** 1 while at least one of the pool's connections is connected */
int sk_redis_pool_is_up(sk_redis_pool_t *pool);

#endif
