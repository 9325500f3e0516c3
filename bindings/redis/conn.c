/*
 * conn.c: the hiredis 0.14 adapter on h2o sockets, with connect and command timeouts on loop timers.
 *
 * Modelled on h2o's lib/common/redis.c (master) as ported to fixed timers in v2.3.0-beta1, re-written for our
 * loop. The three things hiredis 0.14 leaves to us:
 *   - readiness: the fd is registered with H2O_SOCKET_FLAG_DONT_READ, so the evloop only reports readiness and
 *     hiredis does its own read()/write(); addWrite must be idempotent, which the h2o_socket_is_writing() guard
 *     gives (h2o_socket_notify_write is one-shot and asserts no notification is pending);
 *   - timeouts: one timer for the connect, one for the oldest pending command (replies are ordered, so the
 *     oldest command is the first to expire);
 *   - lifetime: hiredis frees the context itself after an I/O error or a failed connect, and freeing it from
 *     inside its own call path is unsafe in 0.14 (redis/hiredis#835), so closes requested there are deferred.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <string.h>
#include "../../core/metrics.h"
#include "conn.h"

typedef struct st_cmd_t {
    h2o_linklist_t link;
    uint64_t deadline;
    sk_redis_conn_t *conn;
    sk_op_t *op;
    sk_redis_reply_cb cb;
} cmd_t;

static void on_close_deferred(sk_deferred_t *d);

/* moves the connection to CLOSING once: commands are refused from now on and on_close is queued on the loop */
static void mark_closing(sk_redis_conn_t *conn, const char *errstr)
{
    if (conn->state == SK_REDIS_CONN_CLOSING || conn->state == SK_REDIS_CONN_IDLE)
        return;
    conn->state = SK_REDIS_CONN_CLOSING;
    conn->_errstr = errstr;
    sk_timer_stop(conn->loop, &conn->_connect_timer);
    sk_timer_stop(conn->loop, &conn->_command_timer);
    sk_loop_defer(conn->loop, &conn->_close_deferred, on_close_deferred);
}

/* frees the context from outside hiredis: pending commands are called back with NULL, then ev_cleanup runs */
static void free_context(sk_redis_conn_t *conn)
{
    ++conn->_in_hiredis;
    redisAsyncFree(conn->_ac);
    --conn->_in_hiredis;
    conn->_ac = NULL; /* ev_cleanup did it already; keep it obvious */
}

static void on_close_deferred(sk_deferred_t *d)
{
    sk_redis_conn_t *conn = H2O_STRUCT_FROM_MEMBER(sk_redis_conn_t, _close_deferred, d);
    if (conn->_ac != NULL)
        free_context(conn);
    conn->state = SK_REDIS_CONN_IDLE;
    if (conn->on_close != NULL)
        conn->on_close(conn, conn->_errstr);
}

/* ===== event hooks (called by hiredis) ===== */

static void on_read(h2o_socket_t *sock, const char *err)
{
    sk_redis_conn_t *conn = sock->data;
    (void)err; /* hiredis sees the error itself when it reads */
    ++conn->_in_hiredis;
    redisAsyncHandleRead(conn->_ac);
    --conn->_in_hiredis;
}

static void on_write(h2o_socket_t *sock, const char *err)
{
    sk_redis_conn_t *conn = sock->data;
    (void)err;
    /* a notification may outlive the context when a close raced with it */
    if (conn->_ac == NULL || conn->_sock != sock)
        return;
    ++conn->_in_hiredis;
    redisAsyncHandleWrite(conn->_ac);
    --conn->_in_hiredis;
}

static void ev_add_read(void *p)
{
    sk_redis_conn_t *conn = p;
    if (!h2o_socket_is_reading(conn->_sock))
        h2o_socket_read_start(conn->_sock, on_read);
}

static void ev_del_read(void *p)
{
    sk_redis_conn_t *conn = p;
    if (h2o_socket_is_reading(conn->_sock))
        h2o_socket_read_stop(conn->_sock);
}

static void ev_add_write(void *p)
{
    sk_redis_conn_t *conn = p;
    /* notify_write is one-shot and must not be armed twice; hiredis re-adds after each partial write */
    if (!h2o_socket_is_writing(conn->_sock))
        h2o_socket_notify_write(conn->_sock, on_write);
}

/* called exactly once by hiredis right before it frees the context, whoever initiated the free */
static void ev_cleanup(void *p)
{
    sk_redis_conn_t *conn = p;
    redisAsyncContext *ac = conn->_ac;
    h2o_socket_close(conn->_sock); /* closes the fd ... */
    conn->_sock = NULL;
    ac->c.fd = -1; /* ... so hiredis must not close it a second time (the number may be reused already) */
    ac->ev.data = NULL;
    ac->data = NULL;
    conn->_ac = NULL;
    mark_closing(conn, conn->state == SK_REDIS_CONN_CONNECTING ? sk_redis_err_connection : sk_redis_err_closed);
}

static void on_hiredis_connect(const redisAsyncContext *ac, int status)
{
    sk_redis_conn_t *conn = ac->data;
    if (conn == NULL)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context right after this returns; ev_cleanup follows */
        snprintf(conn->last_error, sizeof(conn->last_error), "%s", ac->errstr != NULL ? ac->errstr : "connect failed");
        mark_closing(conn, sk_redis_err_connection);
        return;
    }
    if (conn->state != SK_REDIS_CONN_CONNECTING)
        return;
    conn->state = SK_REDIS_CONN_CONNECTED;
    conn->_connected_once = 1;
    sk_timer_stop(conn->loop, &conn->_connect_timer);
    if (conn->on_connect != NULL)
        conn->on_connect(conn);
}

/* ===== timers ===== */

static void on_connect_timeout(sk_timer_t *timer)
{
    sk_redis_conn_t *conn = H2O_STRUCT_FROM_MEMBER(sk_redis_conn_t, _connect_timer, timer);
    snprintf(conn->last_error, sizeof(conn->last_error), "connect timeout");
    sk_redis_conn_close(conn, sk_redis_err_connect_timeout);
}

static void on_command_timeout(sk_timer_t *timer)
{
    sk_redis_conn_t *conn = H2O_STRUCT_FROM_MEMBER(sk_redis_conn_t, _command_timer, timer);
    if (h2o_linklist_is_empty(&conn->_cmds))
        return;
    cmd_t *head = H2O_STRUCT_FROM_MEMBER(cmd_t, link, conn->_cmds.next);
    uint64_t now = sk_now_ms();
    if (head->deadline > now) {
        /* the timer is re-armed lazily: it was set for a command that has been answered since */
        sk_timer_start(conn->loop, &conn->_command_timer, head->deadline - now, on_command_timeout);
        return;
    }
    /* RESP replies are ordered: the only way to give up on one command is to drop the connection. Said with what was
     * waiting, whether it was all written, and whether a reply had arrived unread (then the fault would be ours) */
    int unread = -1;
    if (conn->_sock != NULL)
        ioctl(h2o_socket_get_fd(conn->_sock), FIONREAD, &unread);
    size_t unsent = conn->_ac != NULL && conn->_ac->c.obuf != NULL ? sdslen(conn->_ac->c.obuf) : 0;
    snprintf(conn->last_error, sizeof(conn->last_error),
             "%zu commands waiting, the oldest sent %" PRIu64 " ms ago; %zu bytes not yet written%s, %d unread", conn->pending,
             now - head->deadline + conn->command_timeout_ms, unsent,
             conn->_sock != NULL && h2o_socket_is_writing(conn->_sock) ? " (write awaited)" : "", unread);
    sk_redis_conn_close(conn, sk_redis_err_timeout);
}

/* ===== commands ===== */

static void on_reply(redisAsyncContext *ac, void *_reply, void *privdata)
{
    (void)ac;
    cmd_t *cmd = privdata;
    sk_redis_conn_t *conn = cmd->conn;
    redisReply *reply = _reply;
    const char *errstr = NULL;

    h2o_linklist_unlink(&cmd->link);
    --conn->pending;
    if (h2o_linklist_is_empty(&conn->_cmds))
        sk_timer_stop(conn->loop, &conn->_command_timer);
    if (reply == NULL) {
        /* the context is being freed: by us (state CLOSING, reason set) or by hiredis after an I/O error */
        mark_closing(conn, conn->state == SK_REDIS_CONN_CONNECTING ? sk_redis_err_connection : sk_redis_err_closed);
        errstr = conn->_errstr;
    }
    if (conn->stats != NULL) {
        if (reply == NULL)
            sk_counter_inc(conn->stats->failed);
        else if (reply->type == REDIS_REPLY_ERROR)
            sk_counter_inc(conn->stats->error_reply);
        else
            sk_counter_inc(conn->stats->ok);
    }
    cmd->cb(cmd->op, reply, errstr);
    free(cmd);
}

static cmd_t *new_cmd(sk_redis_conn_t *conn, sk_op_t *op, sk_redis_reply_cb cb)
{
    cmd_t *cmd = h2o_mem_alloc(sizeof(*cmd));
    *cmd = (cmd_t){.deadline = sk_now_ms() + conn->command_timeout_ms, .conn = conn, .op = op, .cb = cb};
    return cmd;
}

static void link_cmd(sk_redis_conn_t *conn, cmd_t *cmd)
{
    h2o_linklist_insert(&conn->_cmds, &cmd->link);
    ++conn->pending;
    if (!sk_timer_is_active(&conn->_command_timer))
        sk_timer_start(conn->loop, &conn->_command_timer, conn->command_timeout_ms, on_command_timeout);
}

const char *sk_redis_conn_command(sk_redis_conn_t *conn, sk_op_t *op, int argc, const char **argv, const size_t *lens,
                                  sk_redis_reply_cb cb)
{
    if (!sk_redis_conn_is_usable(conn) || conn->_ac == NULL)
        return sk_redis_err_closed;
    cmd_t *cmd = new_cmd(conn, op, cb);
    ++conn->_in_hiredis;
    int ret = redisAsyncCommandArgv(conn->_ac, on_reply, cmd, argc, argv, lens);
    --conn->_in_hiredis;
    if (ret != REDIS_OK) {
        free(cmd);
        return sk_redis_err_closed;
    }
    link_cmd(conn, cmd);
    return NULL;
}

const char *sk_redis_conn_commandf(sk_redis_conn_t *conn, sk_op_t *op, sk_redis_reply_cb cb, const char *fmt, ...)
{
    if (!sk_redis_conn_is_usable(conn) || conn->_ac == NULL)
        return sk_redis_err_closed;
    cmd_t *cmd = new_cmd(conn, op, cb);
    va_list ap;
    va_start(ap, fmt);
    ++conn->_in_hiredis;
    int ret = redisvAsyncCommand(conn->_ac, on_reply, cmd, fmt, ap);
    --conn->_in_hiredis;
    va_end(ap);
    if (ret != REDIS_OK) {
        free(cmd);
        return sk_redis_err_closed;
    }
    link_cmd(conn, cmd);
    return NULL;
}

/* ===== life cycle ===== */

void sk_redis_conn_init(sk_redis_conn_t *conn, sk_loop_t *loop, uint64_t connect_timeout_ms, uint64_t command_timeout_ms)
{
    *conn = (sk_redis_conn_t){.loop = loop, .connect_timeout_ms = connect_timeout_ms, .command_timeout_ms = command_timeout_ms};
    h2o_linklist_init_anchor(&conn->_cmds);
}

int sk_redis_conn_connect(sk_redis_conn_t *conn, const char *ip, int port)
{
    redisAsyncContext *ac = redisAsyncConnect(ip, port);
    conn->state = SK_REDIS_CONN_CONNECTING;
    conn->_errstr = NULL;
    if (ac == NULL || ac->err) {
        snprintf(conn->last_error, sizeof(conn->last_error), "%s", ac != NULL ? ac->errstr : "out of memory");
        if (ac != NULL)
            redisAsyncFree(ac); /* never attached: no hooks run, redisFree closes the fd */
        mark_closing(conn, sk_redis_err_connection);
        return -1;
    }
    conn->_ac = ac;
    conn->_sock = h2o_evloop_socket_create(conn->loop->evloop, ac->c.fd, H2O_SOCKET_FLAG_DONT_READ);
    conn->_sock->data = conn;
    ac->data = conn;
    ac->ev.data = conn;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = NULL; /* a spurious write notification only makes hiredis find nothing to write */
    ac->ev.cleanup = ev_cleanup;
    sk_timer_start(conn->loop, &conn->_connect_timer, conn->connect_timeout_ms, on_connect_timeout);
    /* hiredis completes a non-blocking connect on the first writability event, which setting the connect callback
     * asks for (addWrite); so the socket and hooks must be in place before this line */
    redisAsyncSetConnectCallback(ac, on_hiredis_connect);
    return 0;
}

void sk_redis_conn_close(sk_redis_conn_t *conn, const char *errstr)
{
    if (!sk_redis_conn_is_usable(conn))
        return;
    mark_closing(conn, errstr);
    /* inside hiredis the free waits for on_close_deferred; outside it, fail the pending commands now */
    if (conn->_in_hiredis == 0 && conn->_ac != NULL)
        free_context(conn);
}

void sk_redis_conn_dispose(sk_redis_conn_t *conn)
{
    conn->on_close = NULL;
    conn->on_connect = NULL;
    sk_redis_conn_close(conn, sk_redis_err_closed);
    if (conn->_ac != NULL)
        free_context(conn);
    sk_loop_cancel_defer(&conn->_close_deferred);
    sk_timer_stop(conn->loop, &conn->_connect_timer);
    sk_timer_stop(conn->loop, &conn->_command_timer);
    conn->state = SK_REDIS_CONN_IDLE;
}
