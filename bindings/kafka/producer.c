/*
 * producer.c: one idempotent producer for the process, and delivery reports routed to their sender's loop.
 *
 * Path of a report: rd_kafka_producev(opaque = a delivery_t) on a loop thread -> librdkafka -> on_delivery() on the poller
 * thread (blocked in rd_kafka_poll, so it sleeps when idle) -> h2o_multithread_send_message() to the sender's route
 * -> on_messages() on the sender's loop -> cb(d, dr, errstr). A route is the per-loop receiver registered on loop->queue; routes
 * are never freed before shutdown, so a report for a loop that already ended can still look at route->alive.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include "../../core/health.h"
#include "../../core/log.h"
#include "../../core/metrics.h"
#include "metadata.h"
#include "producer.h"

struct route_t {
    h2o_multithread_receiver_t receiver;
    int alive; /* guarded by producer.routes_mutex */
    struct route_t *next;
};

typedef struct st_delivery_t {
    h2o_multithread_message_t msg;
    struct route_t *route;
    sk_op_t *op;
    sk_kafka_dr_cb cb;
    sk_kafka_dr_t dr;
    double t0;
} delivery_t;

static struct {
    /* rk is replaced (by the poller thread only) after a fatal error; producers hold the read lock while enqueueing */
    pthread_rwlock_t lock;
    rd_kafka_t *rk;
    rd_kafka_conf_t *conf; /* template kept to recreate the handle */
    pthread_t poller;
    int poller_started;
    _Atomic int stopping;
    _Atomic int fatal;
    pthread_mutex_t routes_mutex;
    struct route_t *routes;
    _Atomic int *health;
    unsigned flush_timeout_ms;
    struct {
        sk_counter_t *ok, *failed, *queue_full;
        sk_histogram_t *latency;
    } metrics;
} producer = {.lock = PTHREAD_RWLOCK_INITIALIZER, .routes_mutex = PTHREAD_MUTEX_INITIALIZER};

static __thread struct route_t *thread_route;

sk_kafka_settings_t sk_kafka_settings;

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ===== completion ===== */

static void complete(delivery_t *d, int on_loop)
{
    if (on_loop)
        sk_histogram_observe(producer.metrics.latency, now_sec() - d->t0);
    d->dr.on_loop = on_loop;
    d->cb(d->op, &d->dr, d->dr.err != RD_KAFKA_RESP_ERR_NO_ERROR ? sk_kafka_strerror(d->dr.err) : NULL);
    free(d);
}

static void on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        delivery_t *d = H2O_STRUCT_FROM_MEMBER(delivery_t, msg.link, messages->next);
        h2o_linklist_unlink(&d->msg.link);
        complete(d, 1);
    }
}

/* runs on whichever thread polls the handle: the poller, or main during shutdown flush */
static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque)
{
    (void)rk, (void)opaque;
    delivery_t *d = m->_private;
    d->dr = (sk_kafka_dr_t){.err = m->err, .partition = m->partition, .offset = m->offset};
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_counter_inc(producer.metrics.ok);
        atomic_store(producer.health, 1);
    } else {
        sk_counter_inc(producer.metrics.failed);
    }
    pthread_mutex_lock(&producer.routes_mutex);
    if (d->route->alive) {
        h2o_multithread_send_message(&d->route->receiver, &d->msg);
        d = NULL;
    }
    pthread_mutex_unlock(&producer.routes_mutex);
    if (d != NULL)
        complete(d, 0);
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char buf[512];
        rd_kafka_fatal_error(rk, buf, sizeof(buf));
        sk_error("kafka producer: fatal error, recreating the producer: %s", buf);
        atomic_store(&producer.fatal, 1);
    } else if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        sk_warn("kafka producer: all brokers down: %s", reason);
        atomic_store(producer.health, 0);
    } else {
        sk_warn("kafka producer: %s: %s", rd_kafka_err2name(err), reason);
    }
}

static void on_log(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    /* level 3 (FAIL, ERROR) repeats what on_error reports; keep warnings (e.g. ignored properties) visible */
    if (level <= 2)
        sk_error("kafka producer: %s: %s", fac, buf);
    else if (level == 4)
        sk_warn("kafka producer: %s: %s", fac, buf);
    else
        sk_debug("kafka producer: %s: %s", fac, buf);
}

/* ===== configuration ===== */

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *val)
{
    return sk_kafka_conf_set(conf, "kafka producer", key, val);
}

static rd_kafka_t *create_handle(void)
{
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(producer.conf);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (rk == NULL) {
        rd_kafka_conf_destroy(conf);
        sk_error("kafka producer: %s", errstr);
    }
    return rk;
}

/* ===== the poller thread ===== */

/* Swaps in a fresh handle, then drains the old one: its queued messages were purged by the fatal error, and their
 * failure reports still have to reach their coroutines. Runs on the poller thread, never on a loop, so the bounded
 * flush may block here. */
static void recreate(void)
{
    rd_kafka_t *fresh = create_handle();
    if (fresh == NULL)
        return; /* retried on the next poll round */
    pthread_rwlock_wrlock(&producer.lock);
    rd_kafka_t *old = producer.rk;
    producer.rk = fresh;
    atomic_store(&producer.fatal, 0);
    pthread_rwlock_unlock(&producer.lock);
    rd_kafka_purge(old, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(old, 5000);
    rd_kafka_destroy(old);
    sk_info("kafka producer: recreated after a fatal error");
}

/* ===== metadata: health probe and partition counts (metadata.h) ===== */

/* asks the cluster for every topic (blocking up to timeout_ms: start-up, the poller or the metadata thread only); marks
 * the brokers reachable and keeps the partition counts */
static void probe(rd_kafka_t *rk, int timeout_ms)
{
    const struct rd_kafka_metadata *md;
    if (rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        if (md->broker_cnt > 0 && !atomic_exchange(producer.health, 1))
            sk_info("kafka producer: brokers reachable");
        sk_kafka_metadata_keep(md);
        rd_kafka_metadata_destroy(md);
    }
}

/* the metadata thread's fetch */
static void fetch_metadata(int timeout_ms)
{
    pthread_rwlock_rdlock(&producer.lock); /* rk may be swapped by the poller after a fatal error */
    probe(producer.rk, timeout_ms);
    pthread_rwlock_unlock(&producer.lock);
}

static void *poller_main(void *arg)
{
    (void)arg;
    sk_log_set_thread_name("kafka-poller");
    uint64_t last_probe = 0;
    while (!atomic_load(&producer.stopping)) {
        /* only this thread replaces rk, so it reads it without the lock */
        rd_kafka_poll(producer.rk, 1000);
        if (atomic_load(&producer.fatal))
            recreate();
        if (!atomic_load(producer.health) && sk_now_ms() - last_probe >= 2000) {
            last_probe = sk_now_ms();
            probe(producer.rk, 1000);
        }
    }
    return NULL;
}

/* ===== public API ===== */

static void render_queue_depth(sk_metrics_buf_t *buf, const char *name)
{
    sk_metrics_buf_printf(buf, "%s %d\n", name, sk_kafka_producer_outq_len());
}

int sk_kafka_producer_init(sk_config_t *cfg, const char *brokers)
{
    producer.health = sk_health_register("kafka");
    producer.metrics.ok =
        sk_metrics_counter("seckilld_kafka_produced_total", "messages produced, by delivery result", "result=\"ok\"");
    producer.metrics.failed =
        sk_metrics_counter("seckilld_kafka_produced_total", "messages produced, by delivery result", "result=\"error\"");
    producer.metrics.queue_full =
        sk_metrics_counter("seckilld_kafka_produced_total", "messages produced, by delivery result", "result=\"queue_full\"");
    producer.metrics.latency =
        sk_metrics_histogram("seckilld_kafka_delivery_seconds", "time from produce to the delivery report on the sender's loop", "",
                             sk_metrics_latency_bounds, sk_metrics_latency_nbounds);
    sk_metrics_gauge_fn("seckilld_kafka_queue_depth", "messages waiting in the producer's queues", render_queue_depth);
    producer.flush_timeout_ms = (unsigned)sk_config_int(cfg, "kafka.flush_timeout_ms");

    producer.conf = rd_kafka_conf_new();
    if (conf_set(producer.conf, "bootstrap.servers", brokers) != 0 || conf_set(producer.conf, "enable.idempotence", "true") != 0 ||
        conf_set(producer.conf, "acks", "all") != 0 || conf_set(producer.conf, "linger.ms", "1") != 0 ||
        conf_set(producer.conf, "client.id", "seckilld") != 0 ||
        /* librdkafka times out queued messages of a partition whose leader is unreachable only when that broker's
         * thread wakes up to reconnect; the default 10 s backoff cap lets produce calls overrun message.timeout.ms by
         * that much. 1 s keeps the timeout honest. */
        conf_set(producer.conf, "reconnect.backoff.max.ms", "1000") != 0 ||
        sk_kafka_conf_apply(producer.conf, cfg, "kafka.producer") != 0)
        return -1;
    rd_kafka_conf_set_dr_msg_cb(producer.conf, on_delivery);
    rd_kafka_conf_set_error_cb(producer.conf, on_error);
    rd_kafka_conf_set_log_cb(producer.conf, on_log);
    if ((producer.rk = create_handle()) == NULL)
        return -1;
    probe(producer.rk, 1000);
    if (!atomic_load(producer.health))
        sk_warn("kafka producer: brokers %s not reachable yet; produce calls queue until they are", brokers);
    if (pthread_create(&producer.poller, NULL, poller_main, NULL) != 0) {
        sk_error("kafka producer: cannot start the poller thread");
        return -1;
    }
    producer.poller_started = 1;
    if (sk_kafka_metadata_start(fetch_metadata) != 0)
        return -1;
    sk_info("kafka producer: idempotent producer on %s", brokers);
    return 0;
}

int sk_kafka_producer_enabled(void)
{
    return producer.rk != NULL;
}

void sk_kafka_producer_thread_init(sk_loop_t *loop)
{
    if (producer.rk == NULL)
        return;
    struct route_t *route = calloc(1, sizeof(*route));
    h2o_multithread_register_receiver(loop->queue, &route->receiver, on_messages);
    pthread_mutex_lock(&producer.routes_mutex);
    route->alive = 1;
    route->next = producer.routes;
    producer.routes = route;
    pthread_mutex_unlock(&producer.routes_mutex);
    thread_route = route;
}

void sk_kafka_producer_thread_dispose(sk_loop_t *loop)
{
    (void)loop;
    struct route_t *route = thread_route;
    if (route == NULL)
        return;
    pthread_mutex_lock(&producer.routes_mutex);
    route->alive = 0;
    pthread_mutex_unlock(&producer.routes_mutex);
    /* no sender can reach the receiver any more; reports already queued to it are completed off-loop */
    while (!h2o_linklist_is_empty(&route->receiver._messages)) {
        delivery_t *d = H2O_STRUCT_FROM_MEMBER(delivery_t, msg.link, route->receiver._messages.next);
        h2o_linklist_unlink(&d->msg.link);
        complete(d, 0);
    }
    h2o_multithread_unregister_receiver(loop->queue, &route->receiver);
    thread_route = NULL;
}

/* the start's failure: its code for the caller, the family's constant as the return */
static const char *refuse(rd_kafka_resp_err_t err, rd_kafka_resp_err_t *code)
{
    if (code != NULL)
        *code = err;
    return sk_kafka_err_of(err);
}

const char *sk_kafka_produce(sk_op_t *op, const char *topic, int32_t partition, const void *value, size_t len, const void *key,
                             size_t keylen, rd_kafka_headers_t *headers, sk_kafka_dr_cb cb, rd_kafka_resp_err_t *code)
{
    if (producer.rk == NULL)
        return refuse(RD_KAFKA_RESP_ERR__STATE, code); /* sk_kafka_err_not_configured */
    if (thread_route == NULL)
        return refuse(RD_KAFKA_RESP_ERR__INVALID_ARG, code); /* sk_kafka_err_no_loop */
    size_t klen = key != NULL ? keylen : 0;
    delivery_t *d = malloc(sizeof(*d));
    *d = (delivery_t){.route = thread_route, .op = op, .cb = cb, .t0 = now_sec()};
    pthread_rwlock_rdlock(&producer.lock);
    rd_kafka_resp_err_t err =
        rd_kafka_producev(producer.rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_VALUE((void *)value, len), RD_KAFKA_V_KEY(key, klen),
                          RD_KAFKA_V_HEADERS(headers), RD_KAFKA_V_OPAQUE(d), RD_KAFKA_V_END);
    pthread_rwlock_unlock(&producer.lock);
    if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
        free(d);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            sk_counter_inc(producer.metrics.queue_full);
        else
            sk_counter_inc(producer.metrics.failed);
        return refuse(err, code);
    }
    if (code != NULL)
        *code = RD_KAFKA_RESP_ERR_NO_ERROR;
    return NULL;
}

int sk_kafka_producer_outq_len(void)
{
    int n = 0;
    pthread_rwlock_rdlock(&producer.lock);
    if (producer.rk != NULL)
        n = rd_kafka_outq_len(producer.rk);
    pthread_rwlock_unlock(&producer.lock);
    return n;
}

void sk_kafka_producer_shutdown(void)
{
    if (producer.rk == NULL)
        return;
    atomic_store(&producer.stopping, 1);
    if (producer.poller_started) {
        /* rd_kafka_yield only interrupts a dispatch in progress; an idle rd_kafka_poll waits on the main queue,
         * and yielding that queue wakes it at once instead of after its 1 s timeout */
        rd_kafka_queue_t *main_queue = rd_kafka_queue_get_main(producer.rk);
        rd_kafka_queue_yield(main_queue);
        rd_kafka_queue_destroy(main_queue);
        pthread_join(producer.poller, NULL);
    }
    sk_kafka_metadata_stop();
    /* every loop has ended: reports served by this flush complete off-loop (their coroutines are gone) */
    int left = rd_kafka_outq_len(producer.rk);
    if (left != 0)
        sk_info("kafka producer: flushing %d outstanding messages", left);
    if (rd_kafka_flush(producer.rk, producer.flush_timeout_ms) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        sk_error("kafka producer: %d messages not delivered within %u ms, dropping them", rd_kafka_outq_len(producer.rk),
                 producer.flush_timeout_ms);
        rd_kafka_purge(producer.rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(producer.rk, 0);
    }
    pthread_rwlock_wrlock(&producer.lock);
    rd_kafka_t *rk = producer.rk;
    producer.rk = NULL;
    pthread_rwlock_unlock(&producer.lock);
    rd_kafka_destroy(rk);
    rd_kafka_conf_destroy(producer.conf);
    producer.conf = NULL;
    pthread_mutex_lock(&producer.routes_mutex);
    while (producer.routes != NULL) {
        struct route_t *next = producer.routes->next;
        free(producer.routes);
        producer.routes = next;
    }
    pthread_mutex_unlock(&producer.routes_mutex);
}
