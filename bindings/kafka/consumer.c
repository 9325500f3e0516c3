/*
 * consumer.c: the consumer-group member that runs consumer.lua on batches, at least once: the queue it drains, start,
 * stop and reload (pausing and rebalances are consumer_group.c). Its thread, loop, VM hand-over and drain are the
 * core's thread host (core/host.h), as every worker's: the consumer supplies its source of work (librdkafka's wake-up
 * pipe and the poll timer), its batch step, and what idle means (no batch in flight). What happens to the
 * messages it fetched (batches, retries, dead letters, offsets) is the state machine of batch.c, which this file
 * owns (sk_kafka_consumer.batch) and serves through callbacks: run a batch (lua_batch.c), dead-letter a message
 * (dead_letter.c), store offsets, schedule the next step. consumer_status.c publishes the state to other threads.
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
#include "consumer.h"
#include "consumer_internal.h"
#include "dead_letter.h"
#include "lua_batch.h"

sk_kafka_consumer_state_t sk_kafka_consumer = {.pipefds = {-1, -1}};

const sk_vm_role_t sk_kafka_consumer_role = {.name = "consumer", .entry = "consumer.lua"};

/* ===== the queue: wake-ups, draining ===== */

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
        sk_kafka_batch_push(&sk_kafka_consumer.batch, m, rd_kafka_message_timestamp(m, NULL));
    } while (sk_kafka_consumer.batch.count < sk_kafka_consumer.max_pending);
}

/* the next step of the batches, unless one is in flight, a backoff runs, nothing is pending or we are stopping */
static void next_step(void)
{
    sk_kafka_batch_t *b = &sk_kafka_consumer.batch;
    if (sk_kafka_batch_busy(b) || sk_timer_is_active(&sk_kafka_consumer.backoff) || b->count == 0 ||
        sk_kafka_consumer.host.draining)
        return;
    sk_kafka_batch_next(b);
}

static void on_kick(sk_deferred_t *d)
{
    (void)d;
    drain();
    next_step();
    sk_kafka_group_update();
}

static void on_poll_timer(sk_timer_t *timer)
{
    sk_timer_start(&sk_kafka_consumer.host.loop, timer, sk_kafka_consumer.poll_interval_ms, on_poll_timer);
    on_kick(NULL);
}

/* runs drain + the next step on the next iteration, outside any Lua or librdkafka call stack */
static void kick(void)
{
    sk_loop_defer(&sk_kafka_consumer.host.loop, &sk_kafka_consumer.kick, on_kick);
}

static void on_backoff(sk_timer_t *timer)
{
    (void)timer;
    kick();
}

static void on_wakeup_fd(h2o_socket_t *sock, const char *err)
{
    (void)sock, (void)err;
    char buf[256];
    while (read(sk_kafka_consumer.pipefds[0], buf, sizeof(buf)) > 0)
        ;
    on_kick(NULL);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk, (void)opaque;
    sk_warn("kafka consumer: %s: %s", rd_kafka_err2name(err), reason);
}

/* librdkafka 2.0.2 resets a position the broker no longer has (auto.offset.reset=earliest) with only a warning in
 * its log ("offset reset ... Offset out of range"): the messages in between were dropped by the broker (retention,
 * or the mock's fixed 5 MB per partition) before we read them. That loses accepted orders, so it is an error here. */
static sk_counter_t *offset_resets; /* set at start-up, before librdkafka's threads log */

static int is_lost_messages(const char *fac, const char *buf)
{
    return strcmp(fac, "OFFSET") == 0 && strstr(buf, "offset reset") != NULL && strstr(buf, "out of range") != NULL;
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    if (is_lost_messages(fac, buf)) {
        sk_counter_inc(offset_resets);
        sk_error("kafka consumer: MESSAGES DROPPED BY THE BROKER before they were consumed: %s: %s", fac, buf);
    } else if (level <= 2)
        sk_error("kafka consumer: %s: %s", fac, buf);
    else if (level == 4) /* level 3 repeats what on_error reports */
        sk_warn("kafka consumer: %s: %s", fac, buf);
    else
        sk_debug("kafka consumer: %s: %s", fac, buf);
}

/* ===== the host's callbacks (core/host.h) ===== */

/* the consumer's source of work: librdkafka's wake-up pipe, and the timer that keeps us in the group */
static void on_serve(sk_host_t *host)
{
    sk_kafka_consumer.sock = h2o_evloop_socket_create(host->loop.evloop, sk_kafka_consumer.pipefds[0], H2O_SOCKET_FLAG_DONT_READ);
    h2o_socket_read_start(sk_kafka_consumer.sock, on_wakeup_fd);
    on_poll_timer(&sk_kafka_consumer.poll_timer); /* polls now (whatever arrived before the socket was watched), then
                                                   * regularly */
}

/* a reload's VM: the batch in flight ends on the old one (its coroutine holds it), the next runs on this one */
static void on_installed(sk_host_t *host)
{
    sk_info("kafka consumer: now running generation %u", host->vm->generation);
    kick();
}

/* the drain waits for the batch in flight (or the dead letter being delivered); next_step starts no other */
static int is_idle(sk_host_t *host)
{
    return !sk_kafka_batch_busy(&sk_kafka_consumer.batch);
}

static void on_timed_out(sk_host_t *host)
{
    sk_error("kafka consumer: batch still running after %u ms, leaving it uncommitted", host->drain_timeout_ms);
}

/* after the loop (and the batch's coroutine, if the drain timed out, was abandoned: it failed, and is not stored):
 * leaves the group, which revokes (served inside close via sk_kafka_group_on_rebalance) and commits the stored
 * offsets */
static void on_close(sk_host_t *host)
{
    sk_timer_stop(&host->loop, &sk_kafka_consumer.backoff);
    sk_timer_stop(&host->loop, &sk_kafka_consumer.poll_timer);
    sk_loop_cancel_defer(&sk_kafka_consumer.kick);
    h2o_socket_read_stop(sk_kafka_consumer.sock);
    rd_kafka_queue_io_event_enable(sk_kafka_consumer.queue, -1, NULL, 0);
    sk_kafka_batch_revoke(&sk_kafka_consumer.batch, NULL); /* keeps the batch in flight, if any */
    rd_kafka_resp_err_t cerr = rd_kafka_consumer_close(sk_kafka_consumer.rk);
    if (cerr != RD_KAFKA_RESP_ERR_NO_ERROR)
        sk_warn("kafka consumer: close: %s", rd_kafka_err2str(cerr));
    sk_kafka_batch_dispose(&sk_kafka_consumer.batch);
    rd_kafka_queue_destroy(sk_kafka_consumer.queue);
    sk_kafka_status_attach(NULL); /* other threads stop reading the lag off it */
    rd_kafka_destroy(sk_kafka_consumer.rk);
    sk_kafka_consumer.rk = NULL;
    h2o_socket_close(sk_kafka_consumer.sock); /* closes pipefds[0] */
    close(sk_kafka_consumer.pipefds[1]);
    sk_info("kafka consumer: stopped");
}

static const sk_host_callbacks_t host_callbacks = {
    .serve = on_serve, .installed = on_installed, .idle = is_idle, .timed_out = on_timed_out, .close = on_close};

/* ===== the batch callbacks ===== */

static void run_batch(sk_kafka_batch_t *b, size_t n)
{
    sk_kafka_lua_batch_run(b, n, sk_kafka_consumer.host.vm, &sk_kafka_consumer.host.loop);
}

/* the op of the dead letter in flight (one at a time: the batch waits for it); no coroutine waits on it */
static struct {
    sk_op_t super;
    rd_kafka_message_t *m;
} dead_letter_op;

static void on_dead_lettered(sk_op_t *op, const sk_kafka_dr_t *dr, const char *errstr)
{
    (void)op, (void)errstr; /* &dead_letter_op.super; the batch logs librdkafka's text for dr->err */
    if (!dr->on_loop)
        return; /* the consumer loop ended; the message was not stored and will be consumed again */
    sk_kafka_batch_dead_lettered(&sk_kafka_consumer.batch, dead_letter_op.m, dr->err, dr->partition, dr->offset);
}

static rd_kafka_resp_err_t dead_letter(sk_kafka_batch_t *b, rd_kafka_message_t *m, const char *error)
{
    rd_kafka_resp_err_t code;
    dead_letter_op.m = m;
    if (sk_kafka_dead_letter(&dead_letter_op.super, m, error, on_dead_lettered, &code) != NULL)
        return code; /* failed at once: the batch logs librdkafka's text for the code and retries */
    return RD_KAFKA_RESP_ERR_NO_ERROR;
}

static void store_offsets(sk_kafka_batch_t *b, rd_kafka_topic_partition_list_t *offsets)
{
    for (int i = 0; i != offsets->cnt; ++i)
        sk_kafka_status_set_next_offset(offsets->elems[i].partition, offsets->elems[i].offset);
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(sk_kafka_consumer.rk, offsets);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) /* e.g. __STATE: the partition was revoked meanwhile; its new owner redoes it */
        sk_info("kafka consumer: offsets not stored (%s); the messages will be processed again", rd_kafka_err2str(err));
}

static void schedule(sk_kafka_batch_t *b, uint64_t delay_ms)
{
    if (delay_ms == 0) {
        kick();
        return;
    }
    sk_timer_start(&sk_kafka_consumer.host.loop, &sk_kafka_consumer.backoff, delay_ms, on_backoff);
    sk_kafka_group_update();
}

static void destroy_message(rd_kafka_message_t *m)
{
    rd_kafka_message_destroy(m);
}

static const sk_kafka_batch_callbacks_t batch_callbacks = {
    .run = run_batch, .dead_letter = dead_letter, .store = store_offsets, .schedule = schedule, .destroy = destroy_message};

/* ===== start, stop, reload ===== */

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
    /* built here, as the workers' are: the main thread builds every VM (core/host.h) */
    sk_vm_t *vm = sk_vm_create(scripts, &sk_kafka_consumer_role, 0, loop_id, NULL, errstr, sizeof(errstr));
    if (vm == NULL) {
        sk_error("kafka consumer: %s", errstr);
        return -1;
    }
    sk_kafka_batch_settings_t settings = {
        .batch_size = (size_t)sk_config_int(cfg, "kafka.batch_size"),
        .max_failures = (unsigned)sk_config_int(cfg, "kafka.max_failures"),
        .backoff_ms = (unsigned)sk_config_int(cfg, "kafka.retry_backoff_ms"),
        .backoff_max_ms = (unsigned)sk_config_int(cfg, "kafka.retry_backoff_max_ms"),
        .topic = sk_kafka_settings.topic,
        .dlq_topic = sk_kafka_settings.dlq_topic,
    };
    sk_kafka_batch_init(&sk_kafka_consumer.batch, &batch_callbacks, &settings, NULL);
    size_t batch_size = sk_kafka_consumer.batch.settings.batch_size;
    sk_kafka_consumer.max_pending = batch_size * 4 > 1000 ? batch_size * 4 : 1000;
    sk_host_init(&sk_kafka_consumer.host, loop_id, "consumer", &host_callbacks, NULL, vm,
                 (unsigned)sk_config_int(cfg, "kafka.shutdown_timeout_ms"));

    sk_kafka_status_init();
    sk_kafka_group_init();
    offset_resets = sk_metrics_counter("seckilld_kafka_consumer_offset_resets_total",
                                       "positions reset because the broker had dropped unread messages", "");
    sk_kafka_consumer.batch.metrics.batches_ok =
        sk_metrics_counter("seckilld_kafka_consumer_batches_total", "consumer.lua batches, by outcome", "result=\"ok\"");
    sk_kafka_consumer.batch.metrics.batches_failed =
        sk_metrics_counter("seckilld_kafka_consumer_batches_total", "consumer.lua batches, by outcome", "result=\"error\"");
    sk_kafka_consumer.batch.metrics.messages =
        sk_metrics_counter("seckilld_kafka_consumer_messages_total", "messages processed successfully by consumer.lua", "");
    sk_kafka_consumer.batch.metrics.retries =
        sk_metrics_counter("seckilld_kafka_consumer_retries_total", "retries scheduled after a failed batch or dead-letter", "");
    sk_kafka_consumer.batch.metrics.dead_lettered =
        sk_metrics_counter("seckilld_kafka_dead_lettered_total", "messages moved to the dead-letter topic", "");

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (conf_set(conf, "bootstrap.servers", sk_kafka_settings.bootstraps) != 0 ||
        conf_set(conf, "group.id", sk_config_string(cfg, "kafka.group")) != 0 ||
        conf_set(conf, "client.id", "seckilld-consumer") != 0 || conf_set(conf, "enable.auto.commit", "true") != 0 ||
        conf_set(conf, "auto.offset.reset", "earliest") != 0 || sk_kafka_conf_apply(conf, cfg, "kafka.consumer") != 0 ||
        /* after the passthrough: at-least-once depends on it */
        conf_set(conf, "enable.auto.offset.store", "false") != 0) {
        rd_kafka_conf_destroy(conf);
        goto Error;
    }
    char interval[32];
    size_t interval_len = sizeof(interval);
    long max_poll = rd_kafka_conf_get(conf, "max.poll.interval.ms", interval, &interval_len) == RD_KAFKA_CONF_OK
                        ? strtol(interval, NULL, 10)
                        : 300000;
    sk_kafka_consumer.poll_interval_ms = max_poll / 4 < 1000 ? (unsigned)(max_poll / 4) : 1000;
    if (sk_kafka_consumer.poll_interval_ms < 10)
        sk_kafka_consumer.poll_interval_ms = 10;
    rd_kafka_conf_set_rebalance_cb(conf, sk_kafka_group_on_rebalance);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_log_cb(conf, on_log);
    if ((sk_kafka_consumer.rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr))) == NULL) {
        rd_kafka_conf_destroy(conf);
        sk_error("kafka consumer: %s", errstr);
        goto Error;
    }
    sk_kafka_status_attach(sk_kafka_consumer.rk);
    rd_kafka_poll_set_consumer(sk_kafka_consumer.rk);
    sk_kafka_consumer.queue = rd_kafka_queue_get_consumer(sk_kafka_consumer.rk);
    if (pipe2(sk_kafka_consumer.pipefds, O_NONBLOCK | O_CLOEXEC) != 0) {
        sk_error("kafka consumer: pipe: %s", strerror(errno));
        goto Error;
    }
    rd_kafka_queue_io_event_enable(sk_kafka_consumer.queue, sk_kafka_consumer.pipefds[1], "1", 1);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, sk_kafka_settings.topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(sk_kafka_consumer.rk, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_error("kafka consumer: subscribe %s: %s", sk_kafka_settings.topic, rd_kafka_err2str(err));
        goto Error;
    }
    /* returns once the consumer serves, as the workers' start does */
    static h2o_barrier_t serving; /* static: the thread may still be inside the barrier when we return */
    h2o_barrier_init(&serving, 2);
    if (sk_host_start(&sk_kafka_consumer.host, &serving) != 0) {
        sk_error("kafka consumer: cannot start the thread");
        goto Error;
    }
    h2o_barrier_wait(&serving);
    sk_kafka_consumer.running = 1;
    sk_kafka_status_set_active();
    sk_info("kafka consumer: group %s on topic %s (batch %zu, max failures %u, dead letters to %s)",
            sk_config_string(cfg, "kafka.group"), sk_kafka_settings.topic, batch_size, settings.max_failures,
            sk_kafka_settings.dlq_topic);
    return 0;

Error:
    sk_vm_release(sk_kafka_consumer.host.vm); /* the host never started: the VM is still ours */
    sk_kafka_consumer.host.vm = NULL;
    return -1;
}

void sk_kafka_consumer_stop(void)
{
    if (!sk_kafka_consumer.running)
        return;
    sk_host_stop(&sk_kafka_consumer.host);
    sk_host_join(&sk_kafka_consumer.host);
    sk_kafka_consumer.running = 0;
}

void sk_kafka_consumer_reload(sk_scripts_t *scripts)
{
    if (!sk_kafka_consumer.running)
        return;
    char err[512];
    sk_vm_t *vm = sk_vm_create(scripts, &sk_kafka_consumer_role, sk_kafka_consumer.generation + 1, sk_kafka_consumer.host.id, NULL,
                               err, sizeof(err));
    if (vm == NULL) {
        sk_error("kafka consumer: reload failed, keeping generation %u: %s", sk_kafka_consumer.generation, err);
        return;
    }
    ++sk_kafka_consumer.generation;
    sk_host_install(&sk_kafka_consumer.host, vm);
}
