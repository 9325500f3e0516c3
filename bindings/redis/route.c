/*
 * route.c: a command that follows MOVED, ASK, TRYAGAIN and CLUSTERDOWN (route.h).
 *
 * A routed command owns a copy of its words (it may be sent several times) and an op of its own that its sends use;
 * the caller's op and cb are completed once, with the first definite answer. Between sends a command waits on a
 * timer, in a per-thread list, so a thread that stops can complete them (sk_redis_route_dispose_thread).
 */
#include <stdlib.h>
#include <string.h>
#include "err.h"
#include "metrics.h"
#include "redirect.h"
#include "route.h"

typedef struct st_routed_t {
    sk_op_t super; /* the op the sends use */
    sk_redis_cluster_t *cluster;
    sk_op_t *op;
    sk_redis_reply_cb cb;
    sk_redis_cmd_t *cmd;
    int slot;
    unsigned sends;
    uint64_t backoff_ms;
    sk_timer_t timer;
    h2o_linklist_t waiting; /* while the timer runs */
} routed_t;

static __thread h2o_linklist_t waiting_anchor;

static h2o_linklist_t *waiting(void)
{
    if (waiting_anchor.next == NULL)
        h2o_linklist_init_anchor(&waiting_anchor);
    return &waiting_anchor;
}

static void on_reply(sk_op_t *op, redisReply *reply, const char *errstr);

static void complete(routed_t *r, redisReply *reply, const char *errstr)
{
    r->cb(r->op, reply, errstr);
    free(r->cmd);
    free(r);
}

static void on_ignore(sk_op_t *op, redisReply *reply, const char *errstr)
{
    (void)op, (void)reply, (void)errstr;
}

/* one send on conn (NULL: a shared connection of pool); asking: ASKING goes first on the same connection. Returns 0,
 * or -1 if nothing could be sent. */
static int send_on(routed_t *r, sk_redis_pool_t *pool, sk_redis_conn_t *conn, int asking)
{
    if (conn == NULL && pool != NULL)
        conn = sk_redis_pool_shared(pool);
    if (conn == NULL)
        return -1;
    if (asking && sk_redis_conn_commandf(conn, NULL, on_ignore, "ASKING") != NULL)
        return -1;
    if (sk_redis_conn_command(conn, &r->super, r->cmd->argc, r->cmd->argv, r->cmd->lens, on_reply) != NULL)
        return -1;
    ++r->sends;
    return 0;
}

static void on_timer(sk_timer_t *timer)
{
    routed_t *r = H2O_STRUCT_FROM_MEMBER(routed_t, timer, timer);
    h2o_linklist_unlink(&r->waiting);
    if (send_on(r, sk_redis_cluster_pool(r->cluster, r->slot), NULL, 0) != 0) {
        ++r->sends; /* a try, even though nothing left */
        if (r->sends >= SK_REDIS_ROUTE_TRIES) {
            complete(r, NULL, sk_redis_err_unavailable);
            return;
        }
        r->backoff_ms *= 2;
        h2o_linklist_insert(waiting(), &r->waiting);
        sk_timer_start(sk_redis_cluster_loop(r->cluster), &r->timer, r->backoff_ms, on_timer);
    }
}

/* sends again after a pause (from the loop: never inside the hiredis callback that asked) */
static void later(routed_t *r)
{
    sk_counter_inc(sk_redis_metrics.cluster_retries);
    sk_redis_cluster_refresh(r->cluster);
    h2o_linklist_insert(waiting(), &r->waiting);
    sk_timer_start(sk_redis_cluster_loop(r->cluster), &r->timer, r->backoff_ms, on_timer);
    r->backoff_ms *= 2;
}

int sk_redis_route_note_redirect(sk_redis_cluster_t *cluster, const redisReply *reply)
{
    sk_redis_redirect_t rd;
    if (reply == NULL || reply->type != REDIS_REPLY_ERROR)
        return SK_REDIS_REDIRECT_NONE;
    switch (sk_redis_redirect_parse(reply->str, reply->len, &rd)) {
    case SK_REDIS_REDIRECT_MOVED:
        sk_counter_inc(sk_redis_metrics.cluster_moved);
        sk_redis_cluster_moved(cluster, rd.slot, rd.host, rd.port);
        return SK_REDIS_REDIRECT_MOVED;
    case SK_REDIS_REDIRECT_ASK:
        sk_counter_inc(sk_redis_metrics.cluster_ask);
        return SK_REDIS_REDIRECT_ASK;
    default:
        return rd.kind;
    }
}

static void on_reply(sk_op_t *op, redisReply *reply, const char *errstr)
{
    routed_t *r = H2O_STRUCT_FROM_MEMBER(routed_t, super, op);
    int more = r->sends < SK_REDIS_ROUTE_TRIES;
    if (reply == NULL) {
        /* a failed connect never reached the node: safe to send again; a lost connection may have run it */
        if (more && (errstr == sk_redis_err_connection || errstr == sk_redis_err_connect_timeout)) {
            later(r);
            return;
        }
        sk_redis_cluster_refresh(r->cluster);
        complete(r, NULL, errstr);
        return;
    }
    sk_redis_redirect_t rd;
    if (reply->type != REDIS_REPLY_ERROR || sk_redis_redirect_parse(reply->str, reply->len, &rd) == SK_REDIS_REDIRECT_NONE) {
        complete(r, reply, NULL);
        return;
    }
    sk_redis_route_note_redirect(r->cluster, reply);
    switch (rd.kind) {
    case SK_REDIS_REDIRECT_MOVED:
    case SK_REDIS_REDIRECT_ASK:
        if (!more) {
            complete(r, NULL, sk_redis_err_redirects);
            return;
        }
        if (send_on(r, sk_redis_cluster_pool_at(r->cluster, rd.host, rd.port), NULL, rd.kind == SK_REDIS_REDIRECT_ASK) != 0)
            later(r);
        return;
    default: /* TRYAGAIN, CLUSTERDOWN */
        if (!more) {
            complete(r, reply, NULL);
            return;
        }
        later(r);
        return;
    }
}

const char *sk_redis_route_command(sk_redis_cluster_t *cluster, sk_redis_conn_t *conn, sk_op_t *op, int slot, int argc,
                                   const char *const *argv, const size_t *lens, sk_redis_reply_cb cb)
{
    routed_t *r = h2o_mem_alloc(sizeof(*r));
    *r = (routed_t){.cluster = cluster, .op = op, .cb = cb, .slot = slot, .backoff_ms = SK_REDIS_ROUTE_BACKOFF_MS};
    r->cmd = sk_redis_cmd_new(argc, argv, lens);
    if (send_on(r, conn != NULL ? NULL : sk_redis_cluster_pool(cluster, slot), conn, 0) != 0) {
        /* no owner known yet (a refresh is on its way) or the node is unreachable: wait a little, as for TRYAGAIN */
        ++r->sends;
        later(r);
    }
    return NULL;
}

void sk_redis_route_dispose_thread(void)
{
    while (!h2o_linklist_is_empty(waiting())) {
        routed_t *r = H2O_STRUCT_FROM_MEMBER(routed_t, waiting, waiting()->next);
        h2o_linklist_unlink(&r->waiting);
        sk_timer_stop(sk_redis_cluster_loop(r->cluster), &r->timer);
        complete(r, NULL, sk_redis_err_closed);
    }
}
