#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <errmsg.h>
#include "conn.h"

const char sk_mysql_err_timeout[] = "timeout";
const char sk_mysql_err_failed[] = "mysql error";
const char sk_mysql_err_idle_event[] = "idle connection became readable";

enum { PH_NONE, PH_CONNECT, PH_QUERY, PH_STORE, PH_NEXT, PH_STORE_MORE, PH_RESET };

static void drive(sk_mysql_conn_t *c, int events);

/* ===== error bookkeeping ===== */

static void set_error_from_library(sk_mysql_conn_t *c)
{
    c->error.errnum = mysql_errno(c->mysql);
    snprintf(c->error.sqlstate, sizeof(c->error.sqlstate), "%s", mysql_sqlstate(c->mysql));
    snprintf(c->error.message, sizeof(c->error.message), "%s", mysql_error(c->mysql));
    if (c->error.errnum == 0) {
        /* some failure paths leave no code; still report something usable */
        c->error.errnum = CR_UNKNOWN_ERROR;
        snprintf(c->error.message, sizeof(c->error.message), "unknown mysql error");
    }
}

static void set_error(sk_mysql_conn_t *c, unsigned errnum, const char *sqlstate, const char *msg)
{
    c->error.errnum = errnum;
    snprintf(c->error.sqlstate, sizeof(c->error.sqlstate), "%s", sqlstate);
    snprintf(c->error.message, sizeof(c->error.message), "%s", msg);
}

/* client-side codes (CR_*, 2000..2999) mean the connection itself is unusable, unlike server errors such as 1062 */
static int is_connection_error(unsigned errnum)
{
    return errnum >= 2000 && errnum < 3000;
}

/* ===== the h2o socket on a dup of the library's fd ===== */

static void detach(sk_mysql_conn_t *c)
{
    if (c->_sock != NULL) {
        /* closes only our dup (and removes it from epoll); the library's fd stays open until mysql_close */
        h2o_socket_close(c->_sock);
        c->_sock = NULL;
    }
    sk_timer_stop(c->loop, &c->_wait_timer);
    c->_waiting = 0;
}

static int attach(sk_mysql_conn_t *c)
{
    int fd = mysql_get_socket(c->mysql), dupfd;
    if (fd < 0 || (dupfd = dup(fd)) < 0)
        return -1;
    c->_sock = h2o_evloop_socket_create(c->loop->evloop, dupfd, H2O_SOCKET_FLAG_DONT_READ);
    c->_sock->data = c;
    return 0;
}

static void on_readable(h2o_socket_t *sock, const char *err)
{
    sk_mysql_conn_t *c = sock->data;
    (void)err; /* with DONT_READ, h2o reports readiness only; the library sees any EOF itself */
    h2o_socket_read_stop(sock);
    if (c->_phase == PH_NONE) {
        if (c->_on_idle_event != NULL)
            c->_on_idle_event(NULL, c, sk_mysql_err_idle_event);
        return;
    }
    if ((c->_waiting & (MYSQL_WAIT_READ | MYSQL_WAIT_EXCEPT)) == 0)
        return;
    sk_timer_stop(c->loop, &c->_wait_timer);
    drive(c, MYSQL_WAIT_READ);
}

static void on_writable(h2o_socket_t *sock, const char *err)
{
    sk_mysql_conn_t *c = sock->data;
    (void)err;
    /* notify_write is one-shot and cannot be cancelled, so it may fire after the library stopped waiting for it */
    if (c->_phase == PH_NONE || (c->_waiting & MYSQL_WAIT_WRITE) == 0)
        return;
    h2o_socket_read_stop(sock);
    sk_timer_stop(c->loop, &c->_wait_timer);
    drive(c, MYSQL_WAIT_WRITE);
}

static void on_wait_timeout(sk_timer_t *timer)
{
    sk_mysql_conn_t *c = H2O_STRUCT_FROM_MEMBER(sk_mysql_conn_t, _wait_timer, timer);
    if (c->_sock != NULL)
        h2o_socket_read_stop(c->_sock);
    drive(c, MYSQL_WAIT_TIMEOUT);
}

static int wait_for(sk_mysql_conn_t *c, int status)
{
    if (c->_sock == NULL && attach(c) != 0)
        return -1;
    c->_waiting = status;
    if ((status & (MYSQL_WAIT_READ | MYSQL_WAIT_EXCEPT)) != 0)
        h2o_socket_read_start(c->_sock, on_readable);
    if ((status & MYSQL_WAIT_WRITE) != 0 && !h2o_socket_is_writing(c->_sock))
        h2o_socket_notify_write(c->_sock, on_writable);
    if ((status & MYSQL_WAIT_TIMEOUT) != 0)
        sk_timer_start(c->loop, &c->_wait_timer, mysql_get_timeout_value_ms(c->mysql), on_wait_timeout);
    return 0;
}

/* ===== completion ===== */

static void on_deferred_done(sk_deferred_t *d)
{
    sk_mysql_conn_t *c = H2O_STRUCT_FROM_MEMBER(sk_mysql_conn_t, _deferred, d);
    sk_mysql_conn_cb cb = c->_cb;
    sk_op_t *op = c->_op;
    c->_cb = NULL;
    c->_op = NULL;
    cb(op, c, c->_done_err);
}

/* Ends the operation. A library error that means the link is gone closes the connection, so the owner sees
 * connected == 0 and never reuses it. The callback is deferred when we are still inside the call that started the
 * operation: the caller (often the pool handing the connection on) must not be re-entered. */
static void finish(sk_mysql_conn_t *c, const char *err)
{
    sk_timer_stop(c->loop, &c->_deadline);
    c->_phase = PH_NONE;
    c->_continuing = 0;
    c->_waiting = 0;
    if (err != NULL && is_connection_error(c->error.errnum))
        sk_mysql_conn_close(c);
    c->_done_err = err;
    if (c->_in_start) {
        sk_loop_defer(c->loop, &c->_deferred, on_deferred_done);
    } else {
        sk_mysql_conn_cb cb = c->_cb;
        sk_op_t *op = c->_op;
        c->_cb = NULL;
        c->_op = NULL;
        cb(op, c, err);
    }
}

static void fail_from_library(sk_mysql_conn_t *c)
{
    set_error_from_library(c);
    finish(c, sk_mysql_err_failed);
}

static void on_deadline(sk_timer_t *timer)
{
    sk_mysql_conn_t *c = H2O_STRUCT_FROM_MEMBER(sk_mysql_conn_t, _deadline, timer);
    /* the protocol has no way to abandon a statement and keep the link, so the connection goes; the server notices
     * the disconnect and stops the statement on its own */
    set_error(c, 0, "HY000", sk_mysql_err_timeout);
    sk_mysql_conn_close(c);
    finish(c, sk_mysql_err_timeout);
}

/* ===== the state machine ===== */

/* runs the current phase's _start (first time) or _cont (after an event); returns the library's wait mask */
static int step(sk_mysql_conn_t *c, int events)
{
    MYSQL *m = c->mysql;
    int first = !c->_continuing;
    c->_continuing = 1;
    switch (c->_phase) {
    case PH_CONNECT: {
        const sk_mysql_target_t *t = c->target;
        return first ? mysql_real_connect_start(&c->_ret_mysql, m, t->host, t->user, t->password, t->db, t->port, NULL,
                                                CLIENT_MULTI_RESULTS)
                     : mysql_real_connect_cont(&c->_ret_mysql, m, events);
    }
    case PH_QUERY:
        return first ? mysql_real_query_start(&c->_ret_int, m, c->_sql, c->_sql_len)
                     : mysql_real_query_cont(&c->_ret_int, m, events);
    case PH_STORE:
    case PH_STORE_MORE:
        return first ? mysql_store_result_start(&c->_ret_res, m) : mysql_store_result_cont(&c->_ret_res, m, events);
    case PH_NEXT:
        return first ? mysql_next_result_start(&c->_ret_int, m) : mysql_next_result_cont(&c->_ret_int, m, events);
    case PH_RESET:
        return first ? mysql_reset_connection_start(&c->_ret_int, m) : mysql_reset_connection_cont(&c->_ret_int, m, events);
    }
    return 0;
}

/* after a phase completed: moves to the next one (returns 1) or finishes the operation (returns 0) */
static int advance(sk_mysql_conn_t *c)
{
    c->_continuing = 0;
    switch (c->_phase) {
    case PH_CONNECT:
        if (c->_ret_mysql == NULL) {
            set_error_from_library(c);
            sk_mysql_conn_close(c);
            finish(c, sk_mysql_err_failed);
            return 0;
        }
        c->connected = 1;
        finish(c, NULL);
        return 0;
    case PH_QUERY:
        if (c->_ret_int != 0) {
            fail_from_library(c);
            return 0;
        }
        c->_phase = PH_STORE;
        return 1;
    case PH_STORE:
        c->result = c->_ret_res;
        if (c->result == NULL && mysql_field_count(c->mysql) != 0) {
            fail_from_library(c);
            return 0;
        }
        c->affected_rows = c->result != NULL ? 0 : mysql_affected_rows(c->mysql);
        c->insert_id = mysql_insert_id(c->mysql);
        break;
    case PH_STORE_MORE:
        if (c->_ret_res != NULL)
            mysql_free_result(c->_ret_res);
        break;
    case PH_NEXT:
        if (c->_ret_int > 0) {
            fail_from_library(c);
            return 0;
        }
        if (c->_ret_int == 0) {
            c->_phase = PH_STORE_MORE;
            return 1;
        }
        finish(c, NULL);
        return 0;
    case PH_RESET:
        if (c->_ret_int != 0) {
            fail_from_library(c);
            return 0;
        }
        finish(c, NULL);
        return 0;
    }
    /* a result set was stored: unread further results (a CALL) would poison the next statement on this link */
    if (mysql_more_results(c->mysql)) {
        c->_phase = PH_NEXT;
        return 1;
    }
    finish(c, NULL);
    return 0;
}

static void drive(sk_mysql_conn_t *c, int events)
{
    c->_waiting = 0;
    for (;;) {
        int status = step(c, events);
        events = 0;
        if (status != 0) {
            if (wait_for(c, status) != 0) {
                set_error(c, CR_SERVER_LOST, "HY000", "cannot watch the mysql socket");
                sk_mysql_conn_close(c);
                finish(c, sk_mysql_err_failed);
            }
            return;
        }
        if (!advance(c))
            return;
    }
}

static void start(sk_mysql_conn_t *c, int phase, uint64_t timeout_ms, sk_op_t *op, sk_mysql_conn_cb cb)
{
    assert(c->_phase == PH_NONE);
    if (c->_sock != NULL)
        h2o_socket_read_stop(c->_sock); /* stop any idle watch */
    c->_phase = phase;
    c->_continuing = 0;
    c->_op = op;
    c->_cb = cb;
    c->error.errnum = 0;
    c->error.message[0] = '\0';
    if (timeout_ms != 0)
        sk_timer_start(c->loop, &c->_deadline, timeout_ms, on_deadline);
    c->_in_start = 1;
    drive(c, 0);
    c->_in_start = 0;
}

/* ===== public ===== */

sk_mysql_conn_t *sk_mysql_conn_new(sk_loop_t *loop, const sk_mysql_target_t *target)
{
    sk_mysql_conn_t *c = h2o_mem_alloc(sizeof(*c));
    *c = (sk_mysql_conn_t){.loop = loop, .target = target};
    return c;
}

void sk_mysql_conn_free(sk_mysql_conn_t *c)
{
    sk_mysql_conn_close(c);
    sk_timer_stop(c->loop, &c->idle_timer);
    free(c);
}

const char *sk_mysql_conn_connect(sk_mysql_conn_t *c, sk_op_t *op, sk_mysql_conn_cb cb)
{
    sk_mysql_conn_close(c);
    c->mysql = mysql_init(NULL);
    if (c->mysql != NULL) {
        /* the argument is the stack size of the library's coroutine; 0 picks its default */
        mysql_options(c->mysql, MYSQL_OPT_NONBLOCK, 0);
        mysql_options(c->mysql, MYSQL_SET_CHARSET_NAME, "utf8mb4");
        unsigned secs = (unsigned)((c->target->connect_timeout_ms + 999) / 1000);
        mysql_options(c->mysql, MYSQL_OPT_CONNECT_TIMEOUT, &secs);
        unsigned zero = 0;
        mysql_options(c->mysql, MYSQL_OPT_LOCAL_INFILE, &zero);
    }
    if (c->mysql == NULL) {
        set_error(c, CR_OUT_OF_MEMORY, "HY000", "out of memory");
        c->_op = op;
        c->_cb = cb;
        c->_phase = PH_CONNECT;
        c->_in_start = 1;
        finish(c, sk_mysql_err_failed); /* deferred: _in_start */
        c->_in_start = 0;
        return NULL;
    }
    start(c, PH_CONNECT, c->target->connect_timeout_ms, op, cb);
    return NULL;
}

const char *sk_mysql_conn_query(sk_mysql_conn_t *c, sk_op_t *op, const char *sql, size_t len, uint64_t timeout_ms,
                                sk_mysql_conn_cb cb)
{
    assert(c->connected);
    if (c->result != NULL) {
        mysql_free_result(c->result);
        c->result = NULL;
    }
    c->affected_rows = 0;
    c->insert_id = 0;
    c->_sql = sql;
    c->_sql_len = len;
    start(c, PH_QUERY, timeout_ms, op, cb);
    return NULL;
}

const char *sk_mysql_conn_reset(sk_mysql_conn_t *c, sk_op_t *op, uint64_t timeout_ms, sk_mysql_conn_cb cb)
{
    assert(c->connected);
    start(c, PH_RESET, timeout_ms, op, cb);
    return NULL;
}

MYSQL_RES *sk_mysql_conn_take_result(sk_mysql_conn_t *c)
{
    MYSQL_RES *res = c->result;
    c->result = NULL;
    return res;
}

int sk_mysql_conn_is_busy(const sk_mysql_conn_t *c)
{
    return c->_phase != PH_NONE;
}

unsigned sk_mysql_conn_server_status(sk_mysql_conn_t *c)
{
    unsigned status = 0;
    if (c->mysql != NULL)
        mariadb_get_infov(c->mysql, MARIADB_CONNECTION_SERVER_STATUS, &status);
    return status;
}

size_t sk_mysql_conn_escape(sk_mysql_conn_t *c, char *dst, const char *src, size_t len)
{
    return mysql_real_escape_string(c->mysql, dst, src, (unsigned long)len);
}

void sk_mysql_conn_watch_idle(sk_mysql_conn_t *c, sk_mysql_conn_cb cb)
{
    c->_on_idle_event = cb;
    if (c->_sock == NULL && c->connected && attach(c) != 0)
        return;
    if (c->_sock == NULL)
        return;
    if (cb != NULL)
        h2o_socket_read_start(c->_sock, on_readable);
    else
        h2o_socket_read_stop(c->_sock);
}

void sk_mysql_conn_close(sk_mysql_conn_t *c)
{
    detach(c);
    sk_timer_stop(c->loop, &c->_deadline);
    sk_loop_cancel_defer(&c->_deferred);
    if (c->result != NULL) {
        mysql_free_result(c->result);
        c->result = NULL;
    }
    if (c->mysql != NULL) {
        /* allowed mid-operation: it discards the library's suspended coroutine. COM_QUIT is a few bytes on a socket
         * we no longer watch; if the peer is gone the write simply fails. */
        mysql_close(c->mysql);
        c->mysql = NULL;
    }
    c->connected = 0;
    c->_phase = PH_NONE;
    c->_continuing = 0;
    c->_on_idle_event = NULL;
}
