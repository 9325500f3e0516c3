/*
 * route.h: one command sent to a Redis Cluster, following the cluster's answers until a definite one.
 *
 *   - it goes to the master that owns its slot (cluster.h), on a shared pipelined connection;
 *   - MOVED: the map is updated (and a refresh asked for), the command is sent to the new owner at once;
 *   - ASK: ASKING then the command on the target's connection, once, the map unchanged;
 *   - TRYAGAIN, CLUSTERDOWN, or a command that never reached a node (no connection, a connect that failed, no
 *     owner in the map): sent again after a short pause (SK_REDIS_ROUTE_BACKOFF_MS doubling), with a refresh asked
 *     for;
 *   - a command that was sent and lost its connection (closed, timeout) is not sent again: it may have run, and
 *     INCR twice is not INCR. The map is refreshed and the caller told.
 * At most SK_REDIS_ROUTE_TRIES sends in all; then the caller gets the last error reply (TRYAGAIN, CLUSTERDOWN), or
 * sk_redis_err_redirects (MOVED/ASK without end), or the transport error (sk_redis_err_unavailable...). No Lua.
 */
#ifndef SK_REDIS_ROUTE_H
#define SK_REDIS_ROUTE_H

#include "cluster.h"
#include "cmd.h"

/** sends of one command at most (the first and three more) */
#define SK_REDIS_ROUTE_TRIES 4
/** the first pause before sending again (TRYAGAIN, CLUSTERDOWN, node unreachable); doubles each time */
#define SK_REDIS_ROUTE_BACKOFF_MS 20

/** sends argc words (copied) for op to the owner of slot (SK_REDIS_SLOT_NONE: any master), in core/op.h's shape. conn,
 * if not NULL, is the connection to use for the first send (a pipeline keeps its order on one connection; it must be
 * a shared connection of the slot's owner). Returns NULL and calls cb(op, reply, errstr) exactly once later (reply
 * valid during the call only). It does not fail at once today: a first send that cannot leave (no owner known, the
 * node unreachable) is retried like TRYAGAIN and fails through cb; an error return (one of sk_redis_err_*, cb never
 * called) is reserved for a start with nothing worth retrying. */
const char *sk_redis_route_command(sk_redis_cluster_t *cluster, sk_redis_conn_t *conn, sk_op_t *op, int slot, int argc,
                                   const char *const *argv, const size_t *lens, sk_redis_reply_cb cb);

/** what an error reply asks of a transaction (optimistic.c): SK_REDIS_REDIRECT_NONE, or the redirection, with MOVED
 * already applied to the map; counts it */
int sk_redis_route_note_redirect(sk_redis_cluster_t *cluster, const redisReply *reply);

/** completes every command of this thread that waits for its next send, with sk_redis_err_closed (before the
 * cluster is destroyed) */
void sk_redis_route_dispose_thread(void);

#endif
