/*
 * kafka_consumer.c: the consumer-group member that runs consumer.lua on batches, at least once.
 *
 * Wake-up: librdkafka writes a byte to a non-blocking pipe when the consumer queue (where the main queue is
 * forwarded, so rebalances and errors arrive there too) goes from empty to non-empty; the pipe's read end is a
 * DONT_READ h2o socket on the consumer loop. Each wake-up drains the queue with rd_kafka_consumer_poll(rk, 0) into
 * `pending` (a FIFO, so per-partition order holds) until it is empty or `pending` is full; in the latter case no
 * wake-up comes until we drain again, which we do after every batch.
 *
 * Batches are the head of `pending`; they leave it only when done. A failing batch is split: its messages are
 * retried one at a time (so the failing message is found and everything before it is stored), with exponential
 * backoff; a single message that fails kafka.max_failures times is produced to the dead-letter topic with the error
 * in a header, and only once that delivery is confirmed is its offset stored. Nothing is ever skipped.
 */
#define _GNU_SOURCE /* pipe2 */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../core/co.h"
#include "../core/log.h"
#include "../core/metrics.h"
#include "bindings.h"
#include "kafka_consumer.h"
#include "kafka_producer.h"

#define MAX_PARTITIONS 1024

static struct {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    int pipefds[2];
    h2o_socket_t *sock;
    pthread_t tid;
    int running;
    _Atomic int stopping;
    sk_loop_t loop;
    unsigned loop_id;
    sk_vm_t *vm;
    unsigned generation;
    h2o_multithread_receiver_t wakeup;
    /* start-up handshake: the thread reports whether its VM loaded */
    pthread_mutex_t ready_mutex;
    pthread_cond_t ready_cond;
    int ready; /* 0 starting, 1 serving, -1 failed */
    /* settings */
    size_t batch_size, max_pending;
    unsigned max_failures, backoff_ms, backoff_max_ms, shutdown_timeout_ms;
    /* pending messages, a ring buffer */
    rd_kafka_message_t **ring;
    size_t ring_cap, head, count;
    /* the batch in flight: the first `in_flight` messages of pending */
    size_t in_flight;
    int dlq_in_flight;
    unsigned batch_gen, assign_gen;
    size_t split_remaining; /* messages still to be processed one by one after a failed batch */
    unsigned head_failures; /* failures of the head message when processed alone */
    unsigned consecutive_failures;
    char last_error[512];
    sk_timer_t backoff;
    sk_deferred_t kick;
    /* reload */
    pthread_mutex_t reload_mutex;
    sk_scripts_t *reload_scripts;
    /* lag: guarded by lag_mutex since /metrics renders on a worker */
    pthread_mutex_t lag_mutex;
    int64_t next_offset[MAX_PARTITIONS]; /* next offset to process, -1 unknown */
    char assigned[MAX_PARTITIONS];
    struct {
        sk_counter_t *batches_ok, *batches_failed, *messages, *retries, *dead_lettered;
    } metrics;
} consumer = {.reload_mutex = PTHREAD_MUTEX_INITIALIZER,
              .lag_mutex = PTHREAD_MUTEX_INITIALIZER,
              .ready_mutex = PTHREAD_MUTEX_INITIALIZER,
              .ready_cond = PTHREAD_COND_INITIALIZER,
              .pipefds = {-1, -1}};

static void kick(void);

/* ===== pending ring ===== */

static rd_kafka_message_t *pending_at(size_t i)
{
    return consumer.ring[(consumer.head + i) % consumer.ring_cap];
}

static void pending_push(rd_kafka_message_t *m)
{
    if (consumer.count == consumer.ring_cap) {
        size_t cap = consumer.ring_cap * 2;
        rd_kafka_message_t **ring = malloc(cap * sizeof(*ring));
        for (size_t i = 0; i != consumer.count; ++i)
            ring[i] = pending_at(i);
        free(consumer.ring);
        consumer.ring = ring;
        consumer.ring_cap = cap;
        consumer.head = 0;
    }
    consumer.ring[(consumer.head + consumer.count++) % consumer.ring_cap] = m;
}

static void pending_pop(size_t n, int destroy)
{
    for (size_t i = 0; i != n; ++i) {
        if (destroy)
            rd_kafka_message_destroy(pending_at(0));
        consumer.head = (consumer.head + 1) % consumer.ring_cap;
        --consumer.count;
    }
}

/* keeps the first `keep` messages and those of partitions still assigned (for incremental revokes) */
static void pending_drop_revoked(size_t keep, const rd_kafka_topic_partition_list_t *revoked)
{
    size_t n = consumer.count, kept = 0;
    rd_kafka_message_t **tmp = malloc((n + 1) * sizeof(*tmp));
    for (size_t i = 0; i != n; ++i) {
        rd_kafka_message_t *m = pending_at(i);
        int drop = i >= keep && (revoked == NULL ||
                                 rd_kafka_topic_partition_list_find(revoked, rd_kafka_topic_name(m->rkt), m->partition) != NULL);
        if (drop)
            rd_kafka_message_destroy(m);
        else
            tmp[kept++] = m;
    }
    for (size_t i = 0; i != kept; ++i)
        consumer.ring[i] = tmp[i];
    free(tmp);
    consumer.head = 0;
    consumer.count = kept;
}

/* ===== offsets ===== */

/* stores offset+1 of the first n pending messages (highest per partition wins since they are in order) */
static void store_offsets(size_t n)
{
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new((int)n);
    for (size_t i = 0; i != n; ++i) {
        rd_kafka_message_t *m = pending_at(i);
        const char *topic = rd_kafka_topic_name(m->rkt);
        rd_kafka_topic_partition_t *p = rd_kafka_topic_partition_list_find(list, topic, m->partition);
        if (p == NULL)
            p = rd_kafka_topic_partition_list_add(list, topic, m->partition);
        p->offset = m->offset + 1;
        if (m->partition >= 0 && m->partition < MAX_PARTITIONS) {
            pthread_mutex_lock(&consumer.lag_mutex);
            consumer.next_offset[m->partition] = m->offset + 1;
            pthread_mutex_unlock(&consumer.lag_mutex);
        }
    }
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(consumer.rk, list);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) /* e.g. __STATE: the partition was revoked meanwhile; its new owner redoes it */
        sk_info("kafka consumer: offsets not stored (%s); the messages will be processed again", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(list);
}

/* ===== batches ===== */

static void push_message(lua_State *L, rd_kafka_message_t *m)
{
    rd_kafka_headers_t *hdrs;
    lua_createtable(L, 0, 6);
    lua_pushstring(L, rd_kafka_topic_name(m->rkt));
    lua_setfield(L, -2, "topic");
    lua_pushinteger(L, m->partition);
    lua_setfield(L, -2, "partition");
    lua_pushinteger(L, m->offset);
    lua_setfield(L, -2, "offset");
    if (m->key != NULL) {
        lua_pushlstring(L, m->key, m->key_len);
        lua_setfield(L, -2, "key");
    }
    if (m->payload != NULL) {
        lua_pushlstring(L, m->payload, m->len);
        lua_setfield(L, -2, "value");
    }
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *value;
        size_t size;
        lua_newtable(L);
        for (size_t i = 0; rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i) {
            lua_pushlstring(L, value != NULL ? value : "", value != NULL ? size : 0);
            lua_setfield(L, -2, name);
        }
        lua_setfield(L, -2, "headers");
    }
}

static void retry_later(void)
{
    sk_counter_inc(consumer.metrics.retries);
    unsigned shift = consumer.consecutive_failures < 16 ? consumer.consecutive_failures : 16;
    uint64_t delay = (uint64_t)consumer.backoff_ms << (shift > 0 ? shift - 1 : 0);
    if (delay > consumer.backoff_max_ms)
        delay = consumer.backoff_max_ms;
    sk_timer_start(&consumer.loop, &consumer.backoff, delay, (sk_timer_cb)kick);
}

static void on_batch_done(sk_co_t *co, int ok, int nres)
{
    lua_State *L = co->L;
    size_t n = consumer.in_flight;
    consumer.in_flight = 0;
    int success = ok && nres >= 1 && lua_toboolean(L, -nres);
    if (!success) {
        const char *err = !ok                                                  ? lua_tostring(L, -1)
                          : nres >= 2 && lua_type(L, -nres + 1) == LUA_TSTRING ? lua_tostring(L, -nres + 1)
                          : nres == 0 ? "consumer function returned nothing (return true on success)"
                                      : "consumer function returned a false value";
        snprintf(consumer.last_error, sizeof(consumer.last_error), "%s", err != NULL ? err : "error object is not a string");
    }
    if (consumer.batch_gen != consumer.assign_gen) {
        /* partitions were revoked while the script ran: keep what succeeded, drop the rest (the new owner redoes it) */
        if (success)
            store_offsets(n);
        pending_pop(n, 1);
    } else if (success) {
        sk_counter_inc(consumer.metrics.batches_ok);
        sk_counter_add(consumer.metrics.messages, n);
        store_offsets(n);
        pending_pop(n, 1);
        consumer.head_failures = 0;
        consumer.consecutive_failures = 0;
        consumer.split_remaining = consumer.split_remaining > n ? consumer.split_remaining - n : 0;
    } else {
        sk_counter_inc(consumer.metrics.batches_failed);
        ++consumer.consecutive_failures;
        if (n > 1) {
            consumer.split_remaining = n;
        } else {
            ++consumer.head_failures;
        }
        rd_kafka_message_t *m = pending_at(0);
        sk_warn("kafka consumer: batch of %zu from %s[%d]@%lld failed (%u consecutive): %s", n, rd_kafka_topic_name(m->rkt),
                (int)m->partition, (long long)m->offset, consumer.consecutive_failures, consumer.last_error);
        retry_later();
        return;
    }
    kick();
}

static void on_dead_lettered(void *data, const sk_kafka_dr_t *dr, int on_loop)
{
    (void)data;
    if (!on_loop)
        return; /* the consumer loop ended; the message was not stored and will be consumed again */
    consumer.dlq_in_flight = 0;
    rd_kafka_message_t *m = consumer.count != 0 ? pending_at(0) : NULL;
    if (m == NULL || data != m) {
        kick(); /* revoked meanwhile */
        return;
    }
    if (dr->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_error("kafka consumer: cannot dead-letter %s[%d]@%lld to %s: %s; retrying", rd_kafka_topic_name(m->rkt),
                 (int)m->partition, (long long)m->offset, sk_kafka_settings.dlq_topic, rd_kafka_err2str(dr->err));
        ++consumer.consecutive_failures;
        retry_later();
        return;
    }
    sk_counter_inc(consumer.metrics.dead_lettered);
    sk_error("kafka consumer: %s[%d]@%lld failed %u times, moved to %s[%d]@%lld: %s", rd_kafka_topic_name(m->rkt),
             (int)m->partition, (long long)m->offset, consumer.head_failures, sk_kafka_settings.dlq_topic, (int)dr->partition,
             (long long)dr->offset, consumer.last_error);
    store_offsets(1);
    pending_pop(1, 1);
    consumer.head_failures = 0;
    consumer.consecutive_failures = 0;
    if (consumer.split_remaining > 0)
        --consumer.split_remaining;
    kick();
}

static void dead_letter(rd_kafka_message_t *m)
{
    char buf[32];
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(4);
    /* the first line: the message, without the traceback (which is in the log) */
    rd_kafka_header_add(hdrs, "error", -1, consumer.last_error, (ssize_t)strcspn(consumer.last_error, "\n"));
    rd_kafka_header_add(hdrs, "original.topic", -1, rd_kafka_topic_name(m->rkt), -1);
    snprintf(buf, sizeof(buf), "%d", (int)m->partition);
    rd_kafka_header_add(hdrs, "original.partition", -1, buf, -1);
    snprintf(buf, sizeof(buf), "%lld", (long long)m->offset);
    rd_kafka_header_add(hdrs, "original.offset", -1, buf, -1);
    rd_kafka_resp_err_t err =
        sk_kafka_produce(sk_kafka_settings.dlq_topic, m->payload, m->len, m->key, m->key_len, hdrs, on_dead_lettered, m);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_headers_destroy(hdrs);
        sk_error("kafka consumer: cannot dead-letter to %s: %s; retrying", sk_kafka_settings.dlq_topic, rd_kafka_err2str(err));
        ++consumer.consecutive_failures;
        retry_later();
        return;
    }
    consumer.dlq_in_flight = 1;
}

static void apply_reload(void)
{
    pthread_mutex_lock(&consumer.reload_mutex);
    sk_scripts_t *scripts = consumer.reload_scripts;
    consumer.reload_scripts = NULL;
    pthread_mutex_unlock(&consumer.reload_mutex);
    if (scripts == NULL)
        return;
    char err[512];
    sk_vm_t *vm = sk_vm_create(scripts, SK_VM_ROLE_CONSUMER, consumer.generation + 1, consumer.loop_id, NULL, err, sizeof(err));
    sk_scripts_release(scripts);
    if (vm == NULL) {
        sk_error("kafka consumer: reload failed, keeping generation %u: %s", consumer.generation, err);
        return;
    }
    sk_vm_release(consumer.vm);
    consumer.vm = vm;
    ++consumer.generation;
    sk_info("kafka consumer: now running generation %u", consumer.generation);
}

static void start_batch(void)
{
    if (consumer.in_flight != 0 || consumer.dlq_in_flight || sk_timer_is_active(&consumer.backoff) || consumer.count == 0 ||
        atomic_load(&consumer.stopping))
        return;
    apply_reload();
    if (consumer.head_failures >= consumer.max_failures) {
        dead_letter(pending_at(0));
        return;
    }
    size_t n = consumer.split_remaining != 0 ? 1 : consumer.count < consumer.batch_size ? consumer.count : consumer.batch_size;
    sk_co_t *co = sk_co_new(consumer.vm, &consumer.loop);
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, consumer.vm->consumer_ref);
    lua_createtable(co->L, (int)n, 0);
    for (size_t i = 0; i != n; ++i) {
        push_message(co->L, pending_at(i));
        lua_rawseti(co->L, -2, (lua_Integer)i + 1);
    }
    consumer.in_flight = n;
    consumer.batch_gen = consumer.assign_gen;
    sk_co_start(co, 1, on_batch_done, NULL);
}

/* ===== the queue: wake-ups, draining, rebalances ===== */

static void drain(void)
{
    rd_kafka_message_t *m;
    while (consumer.count < consumer.max_pending && (m = rd_kafka_consumer_poll(consumer.rk, 0)) != NULL) {
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                sk_warn("kafka consumer: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        pending_push(m);
    }
}

static void on_kick(sk_deferred_t *d)
{
    (void)d;
    drain();
    start_batch();
}

/* runs drain + start_batch on the next iteration, outside any Lua or librdkafka call stack */
static void kick(void)
{
    sk_loop_defer(&consumer.loop, &consumer.kick, on_kick);
}

static void on_wakeup_fd(h2o_socket_t *sock, const char *err)
{
    (void)sock, (void)err;
    char buf[256];
    while (read(consumer.pipefds[0], buf, sizeof(buf)) > 0)
        ;
    on_kick(NULL);
}

static void on_wakeup_msg(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        h2o_linklist_t *link = messages->next;
        h2o_linklist_unlink(link);
        free(H2O_STRUCT_FROM_MEMBER(h2o_multithread_message_t, link, link));
    }
    kick();
}

static void set_assigned(const rd_kafka_topic_partition_list_t *parts, int assigned)
{
    pthread_mutex_lock(&consumer.lag_mutex);
    for (int i = 0; i != parts->cnt; ++i) {
        int32_t p = parts->elems[i].partition;
        if (p >= 0 && p < MAX_PARTITIONS) {
            consumer.assigned[p] = (char)assigned;
            consumer.next_offset[p] = -1;
        }
    }
    pthread_mutex_unlock(&consumer.lag_mutex);
}

/* served inside rd_kafka_consumer_poll (or rd_kafka_consumer_close), on the consumer thread */
static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    (void)opaque;
    int incremental = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    char desc[1024] = "";
    for (int i = 0; i != parts->cnt && strlen(desc) < sizeof(desc) - 32; ++i)
        snprintf(desc + strlen(desc), sizeof(desc) - strlen(desc), "%s%d", i ? "," : "", (int)parts->elems[i].partition);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        sk_info("kafka consumer: assigned partitions [%s]", desc);
        set_assigned(parts, 1);
        if (incremental)
            rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
    } else {
        /* librdkafka commits the stored offsets of revoked partitions (auto-commit) as they are unassigned; messages
         * not yet processed are dropped and will be fetched again by the partitions' next owner */
        sk_info("kafka consumer: revoked partitions [%s]", desc);
        ++consumer.assign_gen;
        /* the batch in flight (or the message being dead-lettered) stays until its completion */
        pending_drop_revoked(consumer.in_flight + (consumer.dlq_in_flight ? 1 : 0), incremental ? parts : NULL);
        consumer.split_remaining = 0;
        consumer.head_failures = 0;
        set_assigned(parts, 0);
        if (incremental)
            rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    }
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk, (void)opaque;
    sk_warn("kafka consumer: %s: %s", rd_kafka_err2name(err), reason);
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (level <= 2)
        sk_error("kafka consumer: %s: %s", fac, buf);
    else if (level == 4) /* level 3 repeats what on_error reports */
        sk_warn("kafka consumer: %s: %s", fac, buf);
    else
        sk_debug("kafka consumer: %s: %s", fac, buf);
}

/* ===== lag ===== */

static void render_lag(sk_metrics_buf_t *buf, const char *name)
{
    pthread_mutex_lock(&consumer.lag_mutex);
    for (int p = 0; consumer.rk != NULL && p != MAX_PARTITIONS; ++p) {
        int64_t lo, hi, next = consumer.next_offset[p];
        if (!consumer.assigned[p])
            continue;
        if (rd_kafka_get_watermark_offsets(consumer.rk, sk_kafka_settings.topic, p, &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            continue;
        if (next < 0) {
            rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
            rd_kafka_topic_partition_list_add(list, sk_kafka_settings.topic, p);
            if (rd_kafka_position(consumer.rk, list) == RD_KAFKA_RESP_ERR_NO_ERROR)
                next = list->elems[0].offset;
            rd_kafka_topic_partition_list_destroy(list);
            if (next < 0)
                continue;
        }
        sk_metrics_buf_printf(buf, "%s{topic=\"%s\",partition=\"%d\"} %lld\n", name, sk_kafka_settings.topic, p,
                              (long long)(hi > next ? hi - next : 0));
    }
    pthread_mutex_unlock(&consumer.lag_mutex);
}

/* ===== the thread ===== */

static void report_ready(int status)
{
    pthread_mutex_lock(&consumer.ready_mutex);
    consumer.ready = status;
    pthread_cond_signal(&consumer.ready_cond);
    pthread_mutex_unlock(&consumer.ready_mutex);
}

/* wakes the consumer loop from another thread (each message is malloc'd: a linked message cannot be sent twice) */
static void wake(void)
{
    h2o_multithread_message_t *msg = calloc(1, sizeof(*msg));
    h2o_multithread_send_message(&consumer.wakeup, msg);
}

static void *consumer_main(void *arg)
{
    sk_scripts_t *scripts = arg;
    char err[512];
    sk_log_set_thread_name("consumer");
    sk_loop_init(&consumer.loop, consumer.loop_id, NULL, NULL);
    sk_bindings_thread_init(&consumer.loop);
    h2o_multithread_register_receiver(consumer.loop.queue, &consumer.wakeup, on_wakeup_msg);
    consumer.vm = sk_vm_create(scripts, SK_VM_ROLE_CONSUMER, 0, consumer.loop_id, NULL, err, sizeof(err));
    sk_scripts_release(scripts);
    if (consumer.vm == NULL) {
        sk_error("kafka consumer: %s", err);
        report_ready(-1);
        goto Exit;
    }
    report_ready(1);
    consumer.sock = h2o_evloop_socket_create(consumer.loop.evloop, consumer.pipefds[0], H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(consumer.sock, on_wakeup_fd);
    on_kick(NULL); /* whatever arrived before the socket was watched */

    uint64_t deadline = 0;
    for (;;) {
        if (atomic_load(&consumer.stopping)) {
            if (consumer.in_flight == 0 && !consumer.dlq_in_flight)
                break;
            if (deadline == 0)
                deadline = sk_now_ms() + consumer.shutdown_timeout_ms;
            else if (sk_now_ms() >= deadline) {
                sk_error("kafka consumer: batch still running after %u ms, leaving it uncommitted", consumer.shutdown_timeout_ms);
                break;
            }
            if (!sk_timer_is_active(&consumer.backoff))
                sk_timer_start(&consumer.loop, &consumer.backoff, 100, (sk_timer_cb)kick); /* re-check the deadline */
        }
        sk_loop_run_once(&consumer.loop);
    }
    sk_timer_stop(&consumer.loop, &consumer.backoff);
    sk_loop_cancel_defer(&consumer.kick);
    h2o_socket_read_stop(consumer.sock);

Exit:
    /* leaving the group revokes (served inside close via on_rebalance) and commits the stored offsets */
    rd_kafka_queue_io_event_enable(consumer.queue, -1, NULL, 0);
    pending_drop_revoked(consumer.in_flight, NULL);
    rd_kafka_resp_err_t cerr = rd_kafka_consumer_close(consumer.rk);
    if (cerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        sk_warn("kafka consumer: close: %s", rd_kafka_err2str(cerr));
    pending_pop(consumer.count, 1);
    rd_kafka_queue_destroy(consumer.queue);
    pthread_mutex_lock(&consumer.lag_mutex);
    rd_kafka_t *rk = consumer.rk;
    consumer.rk = NULL;
    pthread_mutex_unlock(&consumer.lag_mutex);
    rd_kafka_destroy(rk);
    if (consumer.sock != NULL)
        h2o_socket_close(consumer.sock); /* closes pipefds[0] */
    else
        close(consumer.pipefds[0]);
    close(consumer.pipefds[1]);
    h2o_multithread_unregister_receiver(consumer.loop.queue, &consumer.wakeup);
    sk_bindings_thread_dispose(&consumer.loop);
    if (consumer.vm != NULL)
        sk_vm_release(consumer.vm);
    sk_info("kafka consumer: stopped");
    return NULL;
}

static int has_consumer_script(sk_scripts_t *scripts)
{
    for (size_t i = 0; i != scripts->count; ++i)
        if (strcmp(scripts->files[i].path, "consumer.lua") == 0)
            return 1;
    return 0;
}

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *val)
{
    char errstr[512];
    if (rd_kafka_conf_set(conf, key, val, errstr, sizeof(errstr)) != RD_KAFKA_CONF_OK) {
        sk_error("kafka consumer: %s=%s: %s", key, val, errstr);
        return -1;
    }
    return 0;
}

int sk_kafka_consumer_start(sk_config_t *cfg, sk_scripts_t *scripts, unsigned loop_id, int required)
{
    char errstr[512];
    if (sk_kafka_settings.bootstraps == NULL || !has_consumer_script(scripts)) {
        const char *why = sk_kafka_settings.bootstraps == NULL ? "kafka.brokers is not configured" : "no consumer.lua";
        if (required) {
            sk_error("kafka consumer: cannot run: %s", why);
            return -1;
        }
        sk_info("kafka consumer: not started (%s)", why);
        return 0;
    }
    consumer.loop_id = loop_id;
    consumer.batch_size = (size_t)sk_config_get_int(cfg, "kafka.batch_size", 500);
    consumer.max_pending = consumer.batch_size * 4 > 1000 ? consumer.batch_size * 4 : 1000;
    consumer.max_failures = (unsigned)sk_config_get_int(cfg, "kafka.max_failures", 5);
    consumer.backoff_ms = (unsigned)sk_config_get_int(cfg, "kafka.retry_backoff_ms", 200);
    consumer.backoff_max_ms = (unsigned)sk_config_get_int(cfg, "kafka.retry_backoff_max_ms", 5000);
    consumer.shutdown_timeout_ms = (unsigned)sk_config_get_int(cfg, "kafka.shutdown_timeout_ms", 10000);
    if (consumer.batch_size == 0)
        consumer.batch_size = 1;
    consumer.ring_cap = consumer.max_pending + 1;
    consumer.ring = malloc(consumer.ring_cap * sizeof(*consumer.ring));
    for (int i = 0; i != MAX_PARTITIONS; ++i)
        consumer.next_offset[i] = -1;

    consumer.metrics.batches_ok =
        sk_metrics_counter("seckilld_kafka_consumer_batches_total", "consumer.lua batches, by outcome", "result=\"ok\"");
    consumer.metrics.batches_failed =
        sk_metrics_counter("seckilld_kafka_consumer_batches_total", "consumer.lua batches, by outcome", "result=\"error\"");
    consumer.metrics.messages =
        sk_metrics_counter("seckilld_kafka_consumer_messages_total", "messages processed successfully by consumer.lua", "");
    consumer.metrics.retries =
        sk_metrics_counter("seckilld_kafka_consumer_retries_total", "retries scheduled after a failed batch or dead-letter", "");
    consumer.metrics.dead_lettered =
        sk_metrics_counter("seckilld_kafka_dead_lettered_total", "messages moved to the dead-letter topic", "");
    sk_metrics_gauge_fn("seckilld_kafka_consumer_lag", "messages not yet processed, per assigned partition", render_lag);

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", sk_kafka_settings.bootstraps) != 0 ||
        conf_set(conf, "group.id", sk_config_get_string(cfg, "kafka.group", "seckilld")) != 0 ||
        conf_set(conf, "client.id", "seckilld-consumer") != 0 || conf_set(conf, "enable.auto.commit", "true") != 0 ||
        conf_set(conf, "auto.offset.reset", "earliest") != 0 || sk_kafka_conf_apply(conf, cfg, "kafka.consumer") != 0 ||
        /* after the passthrough: at-least-once depends on it */
        conf_set(conf, "enable.auto.offset.store", "false") != 0) {
        rd_kafka_conf_destroy(conf);
        return -1;
    }
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    if ((consumer.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr))) == NULL) {
        rd_kafka_conf_destroy(conf);
        sk_error("kafka consumer: %s", errstr);
        return -1;
    }
    rd_kafka_poll_set_consumer(consumer.rk);
    consumer.queue = rd_kafka_queue_get_consumer(consumer.rk);
    if (pipe2(consumer.pipefds, O_NONBLOCK | O_CLOEXEC) != 0) {
        sk_error("kafka consumer: pipe: %s", strerror(errno));
        return -1;
    }
    rd_kafka_queue_io_event_enable(consumer.queue, consumer.pipefds[1], "1", 1);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, sk_kafka_settings.topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(consumer.rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_error("kafka consumer: subscribe %s: %s", sk_kafka_settings.topic, rd_kafka_err2str(err));
        return -1;
    }
    sk_scripts_retain(scripts);
    if (pthread_create(&consumer.tid, NULL, consumer_main, scripts) != 0) {
        sk_scripts_release(scripts);
        sk_error("kafka consumer: cannot start the thread");
        return -1;
    }
    pthread_mutex_lock(&consumer.ready_mutex);
    while (consumer.ready == 0)
        pthread_cond_wait(&consumer.ready_cond, &consumer.ready_mutex);
    pthread_mutex_unlock(&consumer.ready_mutex);
    if (consumer.ready < 0) {
        pthread_join(consumer.tid, NULL);
        return -1;
    }
    consumer.running = 1;
    sk_info("kafka consumer: group %s on topic %s (batch %zu, max failures %u, dead letters to %s)",
            sk_config_get_string(cfg, "kafka.group", "seckilld"), sk_kafka_settings.topic, consumer.batch_size,
            consumer.max_failures, sk_kafka_settings.dlq_topic);
    return 0;
}

void sk_kafka_consumer_stop(void)
{
    if (!consumer.running)
        return;
    atomic_store(&consumer.stopping, 1);
    wake();
    pthread_join(consumer.tid, NULL);
    consumer.running = 0;
}

void sk_kafka_consumer_reload(sk_scripts_t *scripts)
{
    if (!consumer.running)
        return;
    sk_scripts_retain(scripts);
    pthread_mutex_lock(&consumer.reload_mutex);
    sk_scripts_t *old = consumer.reload_scripts;
    consumer.reload_scripts = scripts;
    pthread_mutex_unlock(&consumer.reload_mutex);
    if (old != NULL)
        sk_scripts_release(old);
    wake();
}

int sk_kafka_consumer_running(void)
{
    return consumer.running;
}
