/*
 * pool.c: shared pipelined connections and exclusive leases to one Redis server, per worker.
 *
 * Read pool.h first (and lease.h, the queue of lease requests). Invariants:
 *   - a connection is on exactly one of: the shared array, the idle lease list, leased to a caller, cleaning
 *     (DISCARD/UNWATCH in flight after a dirty release), or closing (waiting for its on_close to be freed);
 *   - shared connections are never freed while the pool lives; they reconnect with backoff after every close;
 *   - lease connections are created on demand and freed when they close, so a dead server leaves none behind.
 */
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include "../../core/log.h"
#include "metrics.h"
#include "pool.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 500

typedef enum { ROLE_SHARED, ROLE_LEASE } role_t;
typedef enum { LEASE_IDLE, LEASE_TAKEN, LEASE_CLEANING, LEASE_GONE } lease_state_t;

/* a connection and the pool's book-keeping about it */
typedef struct st_pconn_t {
    sk_redis_conn_t conn; /* first: sk_redis_conn_t * and pconn_t * convert */
    sk_op_t op;           /* the pool's own commands on conn (set-up, cleaning): an op no coroutine waits on */
    sk_redis_pool_t *pool;
    role_t role;
    lease_state_t lease_state;
    h2o_linklist_t link;     /* idle list (lease connections) */
    h2o_linklist_t all_link; /* every lease connection, for destroy */
    uint64_t backoff_ms;
    sk_timer_t reconnect_timer;
    uint64_t leased_at;
    int counted_connected;
} pconn_t;

struct st_sk_redis_pool_t {
    sk_loop_t *loop;
    sk_redis_pool_config_t cfg;
    pconn_t *shared;       /* cfg.pool_size of them */
    size_t next_shared;    /* round robin cursor */
    size_t nlease;         /* lease connections alive (idle, taken or cleaning) */
    h2o_linklist_t leases; /* all of them */
    h2o_linklist_t idle;   /* idle lease connections, most recently used first */
    sk_redis_lease_queue_t waiters;
    size_t nconnected;
    int last_connect_ok;
    int destroying; /* sk_redis_pool_destroy runs: it frees every lease connection itself */
};

static __thread sk_redis_pool_t *default_pool;
static _Atomic long connected_total; /* every pool of every thread, for the health flag */

static void on_conn_connect(sk_redis_conn_t *conn);
static void on_conn_close(sk_redis_conn_t *conn, const char *errstr);
static void grant_waiters(sk_redis_pool_t *pool);

/* ===== configuration ===== */

int sk_redis_pool_parse_url(sk_redis_pool_config_t *cfg, const char *url, char *err, size_t errlen)
{
    char host[256] = "", *p;
    const char *rest;
    cfg->port = 6379;
    cfg->db = 0;
    cfg->password[0] = '\0';
    if (strncasecmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "redis.url must start with redis:// (got \"%s\")", url);
        return -1;
    }
    rest = url + 8;
    const char *at = strchr(rest, '@');
    if (at != NULL) {
        const char *colon = memchr(rest, ':', at - rest);
        const char *pw = colon != NULL ? colon + 1 : rest;
        snprintf(cfg->password, sizeof(cfg->password), "%.*s", (int)(at - pw), pw);
        rest = at + 1;
    }
    size_t hostlen = strcspn(rest, ":/");
    if (hostlen == 0 || hostlen >= sizeof(host)) {
        snprintf(err, errlen, "redis.url: bad host in \"%s\"", url);
        return -1;
    }
    memcpy(host, rest, hostlen);
    rest += hostlen;
    if (*rest == ':') {
        cfg->port = (int)strtol(rest + 1, &p, 10);
        if (cfg->port <= 0 || cfg->port > 65535) {
            snprintf(err, errlen, "redis.url: bad port in \"%s\"", url);
            return -1;
        }
        rest = p;
    }
    if (*rest == '/' && rest[1] != '\0') {
        cfg->db = (int)strtol(rest + 1, &p, 10);
        if (*p != '\0' || cfg->db < 0) {
            snprintf(err, errlen, "redis.url: bad database in \"%s\"", url);
            return -1;
        }
    }
    /* hiredis 0.14 resolves names with a blocking getaddrinfo on every connect: resolve once, here, at start-up */
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "redis.url: cannot resolve \"%s\": %s", host, gai_strerror(gai));
        return -1;
    }
    getnameinfo(res->ai_addr, res->ai_addrlen, cfg->ip, sizeof(cfg->ip), NULL, 0, NI_NUMERICHOST);
    freeaddrinfo(res);
    return 0;
}

/* ===== connection health ===== */

static void set_connected(pconn_t *pc, int on)
{
    if (pc->counted_connected == on)
        return;
    pc->counted_connected = on;
    sk_redis_pool_t *pool = pc->pool;
    pool->nconnected += on ? 1 : -1;
    long total = atomic_fetch_add(&connected_total, on ? 1 : -1) + (on ? 1 : -1);
    sk_gauge_add(sk_redis_metrics.connections, on ? 1 : -1);
    if (sk_redis_metrics.health != NULL && !pool->cfg.cluster_node)
        atomic_store(sk_redis_metrics.health, total > 0);
}

static void on_ignore_reply(sk_op_t *op, redisReply *reply, const char *errstr)
{
    (void)op, (void)reply, (void)errstr;
}

/* AUTH and SELECT go first on every new connection; hiredis buffers them (and what follows) until connected */
static void on_setup_reply(sk_op_t *op, redisReply *reply, const char *errstr)
{
    pconn_t *pc = H2O_STRUCT_FROM_MEMBER(pconn_t, op, op);
    (void)errstr;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR) {
        sk_error("redis: connection setup failed: %s", reply->str);
        sk_redis_conn_close(&pc->conn, sk_redis_err_connection);
    }
}

static int start_connect(pconn_t *pc)
{
    sk_redis_pool_t *pool = pc->pool;
    if (sk_redis_conn_connect(&pc->conn, pool->cfg.ip, pool->cfg.port) != 0)
        return -1;
    if (pool->cfg.password[0] != '\0')
        sk_redis_conn_commandf(&pc->conn, &pc->op, on_setup_reply, "AUTH %s", pool->cfg.password);
    if (pool->cfg.db != 0)
        sk_redis_conn_commandf(&pc->conn, &pc->op, on_setup_reply, "SELECT %d", pool->cfg.db);
    return 0;
}

static void on_reconnect_timer(sk_timer_t *timer)
{
    pconn_t *pc = H2O_STRUCT_FROM_MEMBER(pconn_t, reconnect_timer, timer);
    sk_counter_inc(sk_redis_metrics.reconnects);
    start_connect(pc);
}

static pconn_t *new_pconn(sk_redis_pool_t *pool, pconn_t *pc, role_t role)
{
    if (pc == NULL)
        pc = h2o_mem_alloc(sizeof(*pc));
    *pc = (pconn_t){.pool = pool, .role = role, .backoff_ms = BACKOFF_MIN_MS};
    sk_redis_conn_init(&pc->conn, pool->loop, pool->cfg.connect_timeout_ms, pool->cfg.command_timeout_ms);
    pc->conn.on_connect = on_conn_connect;
    pc->conn.on_close = on_conn_close;
    pc->conn.data = pc;
    pc->conn.stats = &sk_redis_metrics.commands;
    return pc;
}

/* forgets a lease connection for good; from the loop only */
static void free_lease_conn(sk_redis_pool_t *pool, pconn_t *pc)
{
    --pool->nlease;
    h2o_linklist_unlink(&pc->all_link);
    set_connected(pc, 0);
    sk_redis_conn_dispose(&pc->conn);
    free(pc);
}

static void on_conn_connect(sk_redis_conn_t *conn)
{
    pconn_t *pc = conn->data;
    pc->backoff_ms = BACKOFF_MIN_MS;
    pc->pool->last_connect_ok = 1;
    set_connected(pc, 1);
}

/* runs from the loop once a connection is gone and its pending commands have failed */
static void on_conn_close(sk_redis_conn_t *conn, const char *errstr)
{
    pconn_t *pc = conn->data;
    sk_redis_pool_t *pool = pc->pool;
    int was_connected = pc->counted_connected;
    set_connected(pc, 0);
    if (!was_connected) {
        /* the connect itself failed */
        sk_counter_inc(sk_redis_metrics.connection_errors);
        if (pool->last_connect_ok || pc->role == ROLE_LEASE)
            sk_warn("redis: cannot connect to %s:%d: %s", pool->cfg.ip, pool->cfg.port, conn->last_error);
        pool->last_connect_ok = 0;
    } else if (errstr != sk_redis_err_closed || pc->role == ROLE_SHARED) {
        sk_counter_inc(sk_redis_metrics.connection_errors);
        if (errstr == sk_redis_err_timeout) /* the connection said what was waiting (conn.c on_command_timeout) */
            sk_warn("redis: connection to %s:%d dropped: %s (%s)", pool->cfg.ip, pool->cfg.port, errstr, conn->last_error);
        else
            sk_warn("redis: connection to %s:%d dropped: %s", pool->cfg.ip, pool->cfg.port, errstr);
    }
    if (pc->role == ROLE_SHARED) {
        sk_timer_start(pool->loop, &pc->reconnect_timer, was_connected ? 0 : pc->backoff_ms, on_reconnect_timer);
        if (!was_connected)
            pc->backoff_ms = pc->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : pc->backoff_ms * 2;
        return;
    }
    /* a lease connection: whoever held it saw its commands fail; it is simply forgotten */
    if (pc->lease_state == LEASE_IDLE)
        h2o_linklist_unlink(&pc->link);
    if (pc->lease_state == LEASE_TAKEN) {
        /* still held by a caller: it frees the connection in sk_redis_pool_release */
        pc->lease_state = LEASE_GONE;
        return;
    }
    free_lease_conn(pool, pc);
    grant_waiters(pool); /* a slot opened */
}

int sk_redis_pool_is_up(sk_redis_pool_t *pool)
{
    return pool->nconnected != 0;
}

/* ===== the shared lane ===== */

sk_redis_conn_t *sk_redis_pool_shared(sk_redis_pool_t *pool)
{
    /* prefer a connected connection (round robin spreads the pipelines); a connecting one buffers commands */
    sk_redis_conn_t *connecting = NULL;
    for (size_t i = 0; i != pool->cfg.pool_size; ++i) {
        pconn_t *pc = &pool->shared[(pool->next_shared + i) % pool->cfg.pool_size];
        if (pc->conn.state == SK_REDIS_CONN_CONNECTED) {
            pool->next_shared = (pool->next_shared + i + 1) % pool->cfg.pool_size;
            return &pc->conn;
        }
        if (pc->conn.state == SK_REDIS_CONN_CONNECTING && connecting == NULL && pool->last_connect_ok)
            connecting = &pc->conn;
    }
    return connecting;
}

const char *sk_redis_pool_command(sk_redis_pool_t *pool, sk_op_t *op, int argc, const char **argv, const size_t *lens,
                                  sk_redis_reply_cb cb)
{
    sk_redis_conn_t *conn = sk_redis_pool_shared(pool);
    /* a shared connection that cannot take the command (closing) means the same as none: Redis is unavailable */
    if (conn == NULL || sk_redis_conn_command(conn, op, argc, argv, lens, cb) != NULL)
        return sk_redis_err_unavailable;
    return NULL;
}

/* ===== the lease lane ===== */

static void hand_out(sk_redis_pool_t *pool, pconn_t *pc)
{
    pc->lease_state = LEASE_TAKEN;
    pc->leased_at = sk_now_ms();
    (void)pool;
}

/* takes an idle lease connection, or opens a new one if below lease_max; NULL if neither */
static pconn_t *take_conn(sk_redis_pool_t *pool)
{
    if (!h2o_linklist_is_empty(&pool->idle)) {
        pconn_t *pc = H2O_STRUCT_FROM_MEMBER(pconn_t, link, pool->idle.next);
        h2o_linklist_unlink(&pc->link);
        hand_out(pool, pc);
        return pc;
    }
    if (pool->nlease < pool->cfg.lease_max) {
        pconn_t *pc = new_pconn(pool, NULL, ROLE_LEASE);
        ++pool->nlease;
        h2o_linklist_insert(&pool->leases, &pc->all_link);
        hand_out(pool, pc);
        /* handed out while connecting: hiredis buffers the caller's commands; a failed connect fails them */
        start_connect(pc);
        return pc;
    }
    return NULL;
}

static void grant_waiters(sk_redis_pool_t *pool)
{
    while (!sk_redis_lease_queue_is_empty(&pool->waiters)) {
        if (!sk_redis_pool_is_up(pool) && !pool->last_connect_ok) {
            /* Redis is down: fail the queue now rather than at lease_wait_ms */
            sk_redis_lease_t *lease = sk_redis_lease_shift(&pool->waiters);
            lease->cb(lease->op, NULL, sk_redis_err_unavailable);
            continue;
        }
        pconn_t *pc = take_conn(pool);
        if (pc == NULL)
            return;
        sk_redis_lease_t *lease = sk_redis_lease_shift(&pool->waiters);
        sk_histogram_observe(sk_redis_metrics.lease_wait_seconds, (sk_now_ms() - lease->queued_at) / 1000.0);
        lease->cb(lease->op, &pc->conn, NULL);
    }
}

const char *sk_redis_pool_lease(sk_redis_pool_t *pool, sk_redis_lease_t *lease, sk_op_t *op, sk_redis_lease_cb cb,
                                sk_redis_conn_t **conn)
{
    *conn = NULL;
    if (!sk_redis_pool_is_up(pool) && !pool->last_connect_ok)
        return sk_redis_err_unavailable;
    if (sk_redis_lease_queue_is_empty(&pool->waiters)) {
        pconn_t *pc = take_conn(pool);
        if (pc != NULL) {
            *conn = &pc->conn;
            return NULL;
        }
    }
    return sk_redis_lease_push(&pool->waiters, lease, op, cb);
}

/* a released connection becomes idle again, or goes to the next waiter */
static void make_idle(sk_redis_pool_t *pool, pconn_t *pc)
{
    pc->lease_state = LEASE_IDLE;
    h2o_linklist_insert(pool->idle.next, &pc->link); /* most recently used first: keeps the warm ones busy */
    grant_waiters(pool);
}

/* the reply to the UNWATCH that ends a cleaning; every earlier reply has arrived by now (replies are ordered) */
static void on_clean_reply(sk_op_t *op, redisReply *reply, const char *errstr)
{
    pconn_t *pc = H2O_STRUCT_FROM_MEMBER(pconn_t, op, op);
    (void)errstr;
    if (pc->lease_state != LEASE_CLEANING)
        return; /* closed meanwhile: on_conn_close frees it */
    if (reply == NULL || reply->type != REDIS_REPLY_STATUS || pc->conn.pending != 0 || pc->conn.state != SK_REDIS_CONN_CONNECTED) {
        sk_redis_conn_close(&pc->conn, sk_redis_err_closed);
        return;
    }
    make_idle(pc->pool, pc);
}

void sk_redis_pool_release(sk_redis_pool_t *pool, sk_redis_conn_t *conn, int dirty)
{
    pconn_t *pc = (pconn_t *)conn;
    if (pool->destroying)
        return; /* a holder's command failed inside destroy (which is freeing this very connection, or will) */
    sk_histogram_observe(sk_redis_metrics.lease_seconds, (sk_now_ms() - pc->leased_at) / 1000.0);
    if (pc->lease_state == LEASE_GONE) {
        /* it closed while leased; on_conn_close left the freeing to us */
        free_lease_conn(pool, pc);
        grant_waiters(pool);
        return;
    }
    if (!sk_redis_conn_is_usable(conn)) {
        pc->lease_state = LEASE_CLEANING; /* on_conn_close frees it */
        return;
    }
    if (dirty == 0 && conn->pending == 0) {
        make_idle(pool, pc);
        return;
    }
    /* never hand out a connection with WATCHes, an open MULTI or replies in flight: DISCARD (an error reply when
     * there is no MULTI, harmless) then UNWATCH, and pool it only once UNWATCH answers */
    pc->lease_state = LEASE_CLEANING;
    if (((dirty & SK_REDIS_DIRTY_MULTI) != 0 || conn->pending != 0) &&
        sk_redis_conn_commandf(conn, NULL, on_ignore_reply, "DISCARD") != NULL)
        goto Close;
    if (sk_redis_conn_commandf(conn, &pc->op, on_clean_reply, "UNWATCH") != NULL)
        goto Close;
    return;
Close:
    sk_redis_conn_close(conn, sk_redis_err_closed);
}

/* ===== pool life cycle ===== */

sk_redis_pool_t *sk_redis_pool_create(sk_loop_t *loop, const sk_redis_pool_config_t *cfg)
{
    sk_redis_pool_t *pool = h2o_mem_alloc(sizeof(*pool));
    *pool = (sk_redis_pool_t){.loop = loop, .cfg = *cfg, .last_connect_ok = 1};
    if (pool->cfg.pool_size == 0)
        pool->cfg.pool_size = 1;
    h2o_linklist_init_anchor(&pool->idle);
    h2o_linklist_init_anchor(&pool->leases);
    sk_redis_lease_queue_init(&pool->waiters, loop, pool->cfg.lease_queue, pool->cfg.lease_wait_ms);
    pool->shared = h2o_mem_alloc(pool->cfg.pool_size * sizeof(*pool->shared));
    for (size_t i = 0; i != pool->cfg.pool_size; ++i) {
        new_pconn(pool, &pool->shared[i], ROLE_SHARED);
        start_connect(&pool->shared[i]);
    }
    if (default_pool == NULL && !cfg->cluster_node)
        default_pool = pool;
    return pool;
}

void sk_redis_pool_destroy(sk_redis_pool_t *pool)
{
    /* Freeing a connection fails its pending commands, and their callbacks may hand it back (release) from inside
     * the free: release must not free it a second time. */
    pool->destroying = 1;
    for (sk_redis_lease_t *lease; (lease = sk_redis_lease_shift(&pool->waiters)) != NULL;)
        lease->cb(lease->op, NULL, sk_redis_err_closed);
    /* runs after every coroutine ended or was abandoned (core/co.h: abandoning releases leases), so nothing is
     * leased; idle and cleaning connections go */
    while (!h2o_linklist_is_empty(&pool->leases)) {
        pconn_t *pc = H2O_STRUCT_FROM_MEMBER(pconn_t, all_link, pool->leases.next);
        if (pc->lease_state == LEASE_IDLE)
            h2o_linklist_unlink(&pc->link);
        pc->lease_state = LEASE_GONE; /* a pending clean reply must not pool it again */
        free_lease_conn(pool, pc);
    }
    for (size_t i = 0; i != pool->cfg.pool_size; ++i) {
        pconn_t *pc = &pool->shared[i];
        sk_timer_stop(pool->loop, &pc->reconnect_timer);
        set_connected(pc, 0);
        sk_redis_conn_dispose(&pc->conn);
    }
    free(pool->shared);
    if (default_pool == pool)
        default_pool = NULL;
    free(pool);
}

sk_redis_pool_t *sk_redis_pool_default(void)
{
    return default_pool;
}
