/*
 * kafka_consumer.c: the consumer-group member that runs consumer.lua on batches, at least once: its thread, loop and
 * VM, the queue it drains, rebalances, the lag metric, start and stop. The batches themselves (retries, dead
 * letters, offsets) are kafka_batch.c; the two share kafka_consumer_internal.h.
 *
 * Wake-up: librdkafka writes a byte to a non-blocking pipe when the consumer queue (where the main queue is
 * forwarded, so rebalances and errors arrive there too) goes from empty to non-empty; the pipe's read end is a
 * DONT_READ h2o socket on the consumer loop. Each wake-up drains the queue with rd_kafka_consumer_poll(rk, 0) into
 * `pending` (a FIFO, so per-partition order holds) until it is empty or `pending` is full. We drain again after
 * every batch and on a loop timer.
 *
 * Staying in the group: librdkafka leaves the group (and the group rebalances) when the application has not called
 * rd_kafka_consumer_poll for max.poll.interval.ms. So the loop timer polls at least every min(1 s, max.poll.interval.ms
 * / 4), idle or not, and we never stop polling to apply back-pressure: when `pending` is full, or a batch is being
 * retried, the assigned partitions are paused instead (rd_kafka_pause_partitions) and resumed when `pending` is half
 * empty and nothing is being retried. In librdkafka 2.0.2 a pause bumps the partition's version barrier, so messages
 * already fetched but not yet returned by a poll are discarded, and on resume fetching restarts at the offset after
 * the last message a poll returned: nothing we hold in `pending` is fetched twice and nothing is skipped.
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
#include "../../core/co.h"
#include "../../core/log.h"
#include "../../core/metrics.h"
#include "../bindings.h"
#include "consumer.h"
#include "consumer_internal.h"

sk_kafka_consumer_state_t sk_kafka_consumer = {.reload_mutex = PTHREAD_MUTEX_INITIALIZER,
                                               .lag_mutex = PTHREAD_MUTEX_INITIALIZER,
                                               .status_mutex = PTHREAD_MUTEX_INITIALIZER,
                                               .state = "idle",
                                               .ready_mutex = PTHREAD_MUTEX_INITIALIZER,
                                               .ready_cond = PTHREAD_COND_INITIALIZER,
                                               .pipefds = {-1, -1}};

const sk_vm_role_t sk_kafka_consumer_role = {.name = "consumer", .entry = "consumer.lua"};

/* ===== reload ===== */

void sk_kafka_consumer_apply_reload(void)
{
    pthread_mutex_lock(&sk_kafka_consumer.reload_mutex);
    sk_scripts_t *scripts = sk_kafka_consumer.reload_scripts;
    sk_kafka_consumer.reload_scripts = NULL;
    pthread_mutex_unlock(&sk_kafka_consumer.reload_mutex);
    if (scripts == NULL)
        return;
    char err[512];
    sk_vm_t *vm = sk_vm_create(scripts, &sk_kafka_consumer_role, sk_kafka_consumer.generation + 1, sk_kafka_consumer.loop_id, NULL,
                               err, sizeof(err));
    sk_scripts_release(scripts);
    if (vm == NULL) {
        sk_error("kafka consumer: reload failed, keeping generation %u: %s", sk_kafka_consumer.generation, err);
        return;
    }
    sk_vm_release(sk_kafka_consumer.vm);
    sk_kafka_consumer.vm = vm;
    ++sk_kafka_consumer.generation;
    sk_info("kafka consumer: now running generation %u", sk_kafka_consumer.generation);
}

/* ===== the queue: wake-ups, draining, rebalances ===== */

/* polls at least once (that is what keeps us in the group), then until the queue is empty or pending is full; a
 * message returned while pending is full is kept all the same (the ring grows) and the partitions get paused */
static void drain(void)
{
    rd_kafka_message_t *m;
    do {
        if ((m = rd_kafka_consumer_poll(sk_kafka_consumer.rk, 0)) == NULL)
            break;
        if (m->err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                sk_warn("kafka consumer: %s", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        sk_kafka_pending_push(m);
    } while (sk_kafka_consumer.count < sk_kafka_consumer.max_pending);
}

static void on_kick(sk_deferred_t *d)
{
    (void)d;
    drain();
    sk_kafka_batch_start();
    sk_kafka_consumer_update();
}

static void on_poll_timer(sk_timer_t *timer)
{
    sk_timer_start(&sk_kafka_consumer.loop, timer, sk_kafka_consumer.poll_interval_ms, on_poll_timer);
    on_kick(NULL);
}

/* ===== pausing ===== */

/* pauses or resumes `parts` (the assignment we track). rd_kafka_pause_partitions waits for the partitions' librdkafka
 * threads to take the request: a local hand-over, no network round trip. */
static void pause_resume(rd_kafka_topic_partition_list_t *parts, int pause)
{
    if (parts->cnt == 0)
        return;
    rd_kafka_resp_err_t err =
        pause ? rd_kafka_pause_partitions(sk_kafka_consumer.rk, parts) : rd_kafka_resume_partitions(sk_kafka_consumer.rk, parts);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
        sk_warn("kafka consumer: %s: %s", pause ? "pause" : "resume", rd_kafka_err2str(err));
}

static void set_paused(int pause)
{
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(16);
    pthread_mutex_lock(&sk_kafka_consumer.lag_mutex);
    for (int p = 0; p != SK_KAFKA_MAX_PARTITIONS; ++p)
        if (sk_kafka_consumer.assigned[p])
            rd_kafka_topic_partition_list_add(parts, sk_kafka_settings.topic, p);
    pthread_mutex_unlock(&sk_kafka_consumer.lag_mutex);
    pause_resume(parts, pause);
    sk_debug("kafka consumer: %s %d partitions (%zu pending%s)", pause ? "paused" : "resumed", parts->cnt, sk_kafka_consumer.count,
             sk_kafka_consumer.consecutive_failures ? ", retrying" : "");
    rd_kafka_topic_partition_list_destroy(parts);
    sk_kafka_consumer.paused = pause;
    if (pause)
        sk_counter_inc(sk_kafka_consumer.metrics.pauses);
}

void sk_kafka_consumer_update(void)
{
    size_t count = sk_kafka_consumer.count, max = sk_kafka_consumer.max_pending;
    int retrying = sk_kafka_consumer.stalled || sk_kafka_consumer.consecutive_failures != 0;
    int pause = count != 0 && (retrying || count >= max || (sk_kafka_consumer.paused && count > max / 2));
    if (pause != sk_kafka_consumer.paused && sk_kafka_consumer.rk != NULL)
        set_paused(pause);
    sk_kafka_status_publish();
}

/* runs drain + sk_kafka_batch_start on the next iteration, outside any Lua or librdkafka call stack */
void sk_kafka_consumer_kick(void)
{
    sk_loop_defer(&sk_kafka_consumer.loop, &sk_kafka_consumer.kick, on_kick);
}

static void on_wakeup_fd(h2o_socket_t *sock, const char *err)
{
    (void)sock, (void)err;
    char buf[256];
    while (read(sk_kafka_consumer.pipefds[0], buf, sizeof(buf)) > 0)
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
    sk_kafka_consumer_kick();
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
        sk_kafka_status_set_assigned(parts, 1);
        if (incremental)
            rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
        /* an application pause outlives an unassignment in librdkafka: set the state we want either way */
        pause_resume(parts, sk_kafka_consumer.paused);
    } else {
        /* librdkafka commits the stored offsets of revoked partitions (auto-commit) as they are unassigned; messages
         * not yet processed are dropped and will be fetched again by the partitions' next owner */
        sk_info("kafka consumer: revoked partitions [%s]", desc);
        ++sk_kafka_consumer.assign_gen;
        /* the batch in flight (or the message being dead-lettered) stays until its completion */
        sk_kafka_pending_drop_revoked(sk_kafka_consumer.in_flight + (sk_kafka_consumer.dlq_in_flight ? 1 : 0),
                                      incremental ? parts : NULL);
        sk_kafka_consumer.split_remaining = 0;
        sk_kafka_consumer.retry_n = 0;
        sk_kafka_consumer.head_failures = 0;
        sk_kafka_consumer.dead_letter_now = 0;
        sk_kafka_consumer.stalled = 0;
        if (sk_kafka_consumer.count == 0)
            sk_kafka_consumer.consecutive_failures = 0;
        sk_kafka_status_set_assigned(parts, 0);
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

/* ===== the thread ===== */

static void report_ready(int status)
{
    pthread_mutex_lock(&sk_kafka_consumer.ready_mutex);
    sk_kafka_consumer.ready = status;
    pthread_cond_signal(&sk_kafka_consumer.ready_cond);
    pthread_mutex_unlock(&sk_kafka_consumer.ready_mutex);
}

/* wakes the consumer loop from another thread (each message is malloc'd: a linked message cannot be sent twice) */
static void wake(void)
{
    h2o_multithread_message_t *msg = calloc(1, sizeof(*msg));
    h2o_multithread_send_message(&sk_kafka_consumer.wakeup, msg);
}

static void *consumer_main(void *arg)
{
    sk_scripts_t *scripts = arg;
    char err[512];
    sk_log_set_thread_name("consumer");
    sk_loop_init(&sk_kafka_consumer.loop, sk_kafka_consumer.loop_id, NULL, NULL);
    sk_bindings_thread_init(&sk_kafka_consumer.loop);
    h2o_multithread_register_receiver(sk_kafka_consumer.loop.queue, &sk_kafka_consumer.wakeup, on_wakeup_msg);
    sk_kafka_consumer.vm = sk_vm_create(scripts, &sk_kafka_consumer_role, 0, sk_kafka_consumer.loop_id, NULL, err, sizeof(err));
    sk_scripts_release(scripts);
    if (sk_kafka_consumer.vm == NULL) {
        sk_error("kafka consumer: %s", err);
        report_ready(-1);
        goto Exit;
    }
    report_ready(1);
    sk_kafka_consumer.sock =
        h2o_evloop_socket_create(sk_kafka_consumer.loop.evloop, sk_kafka_consumer.pipefds[0], H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(sk_kafka_consumer.sock, on_wakeup_fd);
    on_poll_timer(&sk_kafka_consumer.poll_timer); /* polls now (whatever arrived before the socket was watched), then
                                                   * regularly */

    uint64_t deadline = 0;
    for (;;) {
        if (atomic_load(&sk_kafka_consumer.stopping)) {
            if (sk_kafka_consumer.in_flight == 0 && !sk_kafka_consumer.dlq_in_flight)
                break;
            if (deadline == 0)
                deadline = sk_now_ms() + sk_kafka_consumer.shutdown_timeout_ms;
            else if (sk_now_ms() >= deadline) {
                sk_error("kafka consumer: batch still running after %u ms, leaving it uncommitted",
                         sk_kafka_consumer.shutdown_timeout_ms);
                break;
            }
            if (!sk_timer_is_active(&sk_kafka_consumer.backoff))
                sk_timer_start(&sk_kafka_consumer.loop, &sk_kafka_consumer.backoff, 100,
                               (sk_timer_cb)sk_kafka_consumer_kick); /* re-check the deadline */
        }
        sk_loop_run_once(&sk_kafka_consumer.loop);
    }
    sk_timer_stop(&sk_kafka_consumer.loop, &sk_kafka_consumer.backoff);
    sk_timer_stop(&sk_kafka_consumer.loop, &sk_kafka_consumer.poll_timer);
    sk_loop_cancel_defer(&sk_kafka_consumer.kick);
    h2o_socket_read_stop(sk_kafka_consumer.sock);

Exit:
    /* leaving the group revokes (served inside close via on_rebalance) and commits the stored offsets */
    rd_kafka_queue_io_event_enable(sk_kafka_consumer.queue, -1, NULL, 0);
    sk_kafka_pending_drop_revoked(sk_kafka_consumer.in_flight, NULL);
    rd_kafka_resp_err_t cerr = rd_kafka_consumer_close(sk_kafka_consumer.rk);
    if (cerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        sk_warn("kafka consumer: close: %s", rd_kafka_err2str(cerr));
    sk_kafka_pending_pop(sk_kafka_consumer.count, 1);
    rd_kafka_queue_destroy(sk_kafka_consumer.queue);
    pthread_mutex_lock(&sk_kafka_consumer.lag_mutex);
    rd_kafka_t *rk = sk_kafka_consumer.rk;
    sk_kafka_consumer.rk = NULL;
    pthread_mutex_unlock(&sk_kafka_consumer.lag_mutex);
    rd_kafka_destroy(rk);
    if (sk_kafka_consumer.sock != NULL)
        h2o_socket_close(sk_kafka_consumer.sock); /* closes pipefds[0] */
    else
        close(sk_kafka_consumer.pipefds[0]);
    close(sk_kafka_consumer.pipefds[1]);
    h2o_multithread_unregister_receiver(sk_kafka_consumer.loop.queue, &sk_kafka_consumer.wakeup);
    sk_bindings_thread_dispose(&sk_kafka_consumer.loop);
    if (sk_kafka_consumer.vm != NULL)
        sk_vm_release(sk_kafka_consumer.vm);
    sk_info("kafka consumer: stopped");
    return NULL;
}

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *val)
{
    return sk_kafka_conf_set(conf, "kafka consumer", key, val);
}

int sk_kafka_consumer_start(sk_config_t *cfg, sk_scripts_t *scripts, unsigned loop_id, int required)
{
    char errstr[512];
    if (sk_kafka_settings.bootstraps == NULL || !sk_scripts_has(scripts, sk_kafka_consumer_role.entry)) {
        const char *why = sk_kafka_settings.bootstraps == NULL ? "kafka.brokers is not configured" : "no consumer.lua";
        if (required) {
            sk_error("kafka consumer: cannot run: %s", why);
            return -1;
        }
        sk_info("kafka consumer: not started (%s)", why);
        return 0;
    }
    sk_kafka_consumer.loop_id = loop_id;
    sk_kafka_consumer.batch_size = (size_t)sk_config_get_int(cfg, "kafka.batch_size", 500);
    sk_kafka_consumer.max_pending = sk_kafka_consumer.batch_size * 4 > 1000 ? sk_kafka_consumer.batch_size * 4 : 1000;
    sk_kafka_consumer.max_failures = (unsigned)sk_config_get_int(cfg, "kafka.max_failures", 5);
    sk_kafka_consumer.backoff_ms = (unsigned)sk_config_get_int(cfg, "kafka.retry_backoff_ms", 200);
    sk_kafka_consumer.backoff_max_ms = (unsigned)sk_config_get_int(cfg, "kafka.retry_backoff_max_ms", 5000);
    sk_kafka_consumer.shutdown_timeout_ms = (unsigned)sk_config_get_int(cfg, "kafka.shutdown_timeout_ms", 10000);
    if (sk_kafka_consumer.batch_size == 0)
        sk_kafka_consumer.batch_size = 1;
    sk_kafka_consumer.ring_cap = sk_kafka_consumer.max_pending + 1;
    sk_kafka_consumer.ring = malloc(sk_kafka_consumer.ring_cap * sizeof(*sk_kafka_consumer.ring));
    for (int i = 0; i != SK_KAFKA_MAX_PARTITIONS; ++i)
        sk_kafka_consumer.next_offset[i] = -1;

    sk_kafka_status_init();
    sk_kafka_consumer.metrics.batches_ok =
        sk_metrics_counter("seckilld_kafka_consumer_batches_total", "consumer.lua batches, by outcome", "result=\"ok\"");
    sk_kafka_consumer.metrics.batches_failed =
        sk_metrics_counter("seckilld_kafka_consumer_batches_total", "consumer.lua batches, by outcome", "result=\"error\"");
    sk_kafka_consumer.metrics.messages =
        sk_metrics_counter("seckilld_kafka_consumer_messages_total", "messages processed successfully by consumer.lua", "");
    sk_kafka_consumer.metrics.retries =
        sk_metrics_counter("seckilld_kafka_consumer_retries_total", "retries scheduled after a failed batch or dead-letter", "");
    sk_kafka_consumer.metrics.dead_lettered =
        sk_metrics_counter("seckilld_kafka_dead_lettered_total", "messages moved to the dead-letter topic", "");
    sk_kafka_consumer.metrics.pauses = sk_metrics_counter(
        "seckilld_kafka_consumer_pauses_total", "times the assigned partitions were paused (pending full, or a batch retried)", "");

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
    char interval[32];
    size_t interval_len = sizeof(interval);
    long max_poll = rd_kafka_conf_get(conf, "max.poll.interval.ms", interval, &interval_len) == RD_KAFKA_CONF_OK
                        ? strtol(interval, NULL, 10)
                        : 300000;
    sk_kafka_consumer.poll_interval_ms = max_poll / 4 < 1000 ? (unsigned)(max_poll / 4) : 1000;
    if (sk_kafka_consumer.poll_interval_ms < 10)
        sk_kafka_consumer.poll_interval_ms = 10;
    rd_kafka_conf_set_rebalance_cb(conf, on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    if ((sk_kafka_consumer.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr))) == NULL) {
        rd_kafka_conf_destroy(conf);
        sk_error("kafka consumer: %s", errstr);
        return -1;
    }
    rd_kafka_poll_set_consumer(sk_kafka_consumer.rk);
    sk_kafka_consumer.queue = rd_kafka_queue_get_consumer(sk_kafka_consumer.rk);
    if (pipe2(sk_kafka_consumer.pipefds, O_NONBLOCK | O_CLOEXEC) != 0) {
        sk_error("kafka consumer: pipe: %s", strerror(errno));
        return -1;
    }
    rd_kafka_queue_io_event_enable(sk_kafka_consumer.queue, sk_kafka_consumer.pipefds[1], "1", 1);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, sk_kafka_settings.topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(sk_kafka_consumer.rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_error("kafka consumer: subscribe %s: %s", sk_kafka_settings.topic, rd_kafka_err2str(err));
        return -1;
    }
    sk_scripts_retain(scripts);
    if (pthread_create(&sk_kafka_consumer.tid, NULL, consumer_main, scripts) != 0) {
        sk_scripts_release(scripts);
        sk_error("kafka consumer: cannot start the thread");
        return -1;
    }
    pthread_mutex_lock(&sk_kafka_consumer.ready_mutex);
    while (sk_kafka_consumer.ready == 0)
        pthread_cond_wait(&sk_kafka_consumer.ready_cond, &sk_kafka_consumer.ready_mutex);
    pthread_mutex_unlock(&sk_kafka_consumer.ready_mutex);
    if (sk_kafka_consumer.ready < 0) {
        pthread_join(sk_kafka_consumer.tid, NULL);
        return -1;
    }
    sk_kafka_consumer.running = 1;
    atomic_store(&sk_kafka_consumer.active, 1);
    sk_info("kafka consumer: group %s on topic %s (batch %zu, max failures %u, dead letters to %s)",
            sk_config_get_string(cfg, "kafka.group", "seckilld"), sk_kafka_settings.topic, sk_kafka_consumer.batch_size,
            sk_kafka_consumer.max_failures, sk_kafka_settings.dlq_topic);
    return 0;
}

void sk_kafka_consumer_stop(void)
{
    if (!sk_kafka_consumer.running)
        return;
    atomic_store(&sk_kafka_consumer.stopping, 1);
    wake();
    pthread_join(sk_kafka_consumer.tid, NULL);
    sk_kafka_consumer.running = 0;
}

void sk_kafka_consumer_reload(sk_scripts_t *scripts)
{
    if (!sk_kafka_consumer.running)
        return;
    sk_scripts_retain(scripts);
    pthread_mutex_lock(&sk_kafka_consumer.reload_mutex);
    sk_scripts_t *old = sk_kafka_consumer.reload_scripts;
    sk_kafka_consumer.reload_scripts = scripts;
    pthread_mutex_unlock(&sk_kafka_consumer.reload_mutex);
    if (old != NULL)
        sk_scripts_release(old);
    wake();
}

int sk_kafka_consumer_running(void)
{
    return sk_kafka_consumer.running;
}
