/*
 * consumer_status.c: what the consumer tells the rest of the process: the lag metric, the stall gauge, the age
 * of the oldest message it holds but has not processed, its /healthz status and sk_kafka_consumer_status() (which
 * kafka.consumer_status() returns to scripts on any worker).
 *
 * The consumer thread publishes (sk_kafka_status_publish, after every change) into this file's own state: atomics
 * and a mutex-guarded state; readers on other threads never touch the consumer's fields. The lag is computed by the
 * reader from librdkafka's cached watermarks and positions (no network round trip) under lag_mutex, which also
 * guards `rk` (attached at start, detached before it is destroyed).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "../../core/health.h"
#include "../../core/log.h"
#include "../../core/metrics.h"
#include "consumer.h"
#include "consumer_internal.h"

/* what other threads read of the consumer */
static struct {
    /* the lag: guarded by lag_mutex since /metrics renders on a worker */
    pthread_mutex_t lag_mutex;
    rd_kafka_t *rk;
    int64_t next_offset[SK_KAFKA_MAX_PARTITIONS]; /* next offset to process, -1 unknown */
    char assigned[SK_KAFKA_MAX_PARTITIONS];
    _Atomic int active;           /* the consumer was started in this process */
    _Atomic long npending;        /* the batch's count, mirrored */
    _Atomic int64_t oldest_ts;    /* Kafka timestamp (epoch ms) of the oldest pending message, 0 if none */
    _Atomic int stalled_flag;     /* the batch's stall, mirrored */
    pthread_mutex_t status_mutex; /* guards state and error below */
    const char *state;            /* "idle", "ok", "retrying", "stalled" (static strings) */
    char error[256];              /* first line of the last error while retrying or stalled, else "" */
    sk_health_info_t *health;
} status = {.lag_mutex = PTHREAD_MUTEX_INITIALIZER, .status_mutex = PTHREAD_MUTEX_INITIALIZER, .state = "idle"};

/* ===== lag ===== */

void sk_kafka_status_attach(rd_kafka_t *rk)
{
    pthread_mutex_lock(&status.lag_mutex);
    status.rk = rk;
    pthread_mutex_unlock(&status.lag_mutex);
}

void sk_kafka_status_set_active(void)
{
    atomic_store(&status.active, 1);
}

void sk_kafka_status_assigned(rd_kafka_topic_partition_list_t *out)
{
    pthread_mutex_lock(&status.lag_mutex);
    for (int p = 0; p != SK_KAFKA_MAX_PARTITIONS; ++p)
        if (status.assigned[p])
            rd_kafka_topic_partition_list_add(out, sk_kafka_settings.topic, p);
    pthread_mutex_unlock(&status.lag_mutex);
}

void sk_kafka_status_set_next_offset(int32_t partition, int64_t next)
{
    if (partition < 0 || partition >= SK_KAFKA_MAX_PARTITIONS)
        return;
    pthread_mutex_lock(&status.lag_mutex);
    status.next_offset[partition] = next;
    pthread_mutex_unlock(&status.lag_mutex);
}

void sk_kafka_status_set_assigned(const rd_kafka_topic_partition_list_t *parts, int assigned)
{
    pthread_mutex_lock(&status.lag_mutex);
    for (int i = 0; i != parts->cnt; ++i) {
        int32_t p = parts->elems[i].partition;
        if (p >= 0 && p < SK_KAFKA_MAX_PARTITIONS) {
            status.assigned[p] = (char)assigned;
            status.next_offset[p] = -1;
        }
    }
    pthread_mutex_unlock(&status.lag_mutex);
}

/* the lag of an assigned partition (high watermark minus the next offset to process), -1 when unknown; lag_mutex
 * held, rk not NULL */
static int64_t partition_lag(int p)
{
    int64_t lo, hi, next = status.next_offset[p];
    if (rd_kafka_get_watermark_offsets(status.rk, sk_kafka_settings.topic, p, &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR || hi < 0)
        return -1;
    if (next < 0) {
        rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(list, sk_kafka_settings.topic, p);
        if (rd_kafka_position(status.rk, list) == RD_KAFKA_RESP_ERR_NO_ERROR)
            next = list->elems[0].offset;
        rd_kafka_topic_partition_list_destroy(list);
        if (next < 0)
            return -1;
    }
    return hi > next ? hi - next : 0;
}

static void render_lag(sk_metrics_buf_t *buf, const char *name)
{
    pthread_mutex_lock(&status.lag_mutex);
    for (int p = 0; status.rk != NULL && p != SK_KAFKA_MAX_PARTITIONS; ++p) {
        int64_t lag;
        if (status.assigned[p] && (lag = partition_lag(p)) >= 0)
            sk_metrics_buf_printf(buf, "%s{topic=\"%s\",partition=\"%d\"} %lld\n", name, sk_kafka_settings.topic, p,
                                  (long long)lag);
    }
    pthread_mutex_unlock(&status.lag_mutex);
}

/* ===== the stall and the oldest message ===== */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double oldest_age_seconds(void)
{
    int64_t oldest = atomic_load(&status.oldest_ts), now = wall_ms();
    return oldest > 0 && now > oldest ? (now - oldest) / 1000.0 : 0;
}

static void render_stalled(sk_metrics_buf_t *buf, const char *name)
{
    sk_metrics_buf_printf(buf, "%s %d\n", name, atomic_load(&status.stalled_flag));
}

static void render_oldest(sk_metrics_buf_t *buf, const char *name)
{
    sk_metrics_buf_printf(buf, "%s %.3f\n", name, oldest_age_seconds());
}

/* ===== publishing ===== */

void sk_kafka_status_init(void)
{
    for (int i = 0; i != SK_KAFKA_MAX_PARTITIONS; ++i)
        status.next_offset[i] = -1;
    sk_metrics_gauge_fn("seckilld_kafka_consumer_lag", "messages not yet processed, per assigned partition", render_lag);
    sk_metrics_gauge_fn("seckilld_kafka_consumer_stalled",
                        "1 while consumer.lua reports a transient failure (nil, err) and its batch is being retried",
                        render_stalled);
    sk_metrics_gauge_fn("seckilld_kafka_consumer_oldest_unpersisted_seconds",
                        "age (from its Kafka timestamp) of the oldest message the consumer holds unprocessed, 0 if none",
                        render_oldest);
    status.health = sk_health_register_info("consumer", "idle");
}

void sk_kafka_status_publish(sk_kafka_batch_t *batch)
{
    __typeof__(status) *c = &status;
    atomic_store(&c->npending, (long)batch->count);
    atomic_store(&c->oldest_ts, sk_kafka_batch_oldest(batch));
    atomic_store(&c->stalled_flag, batch->stalled);
    const char *state = sk_kafka_batch_state(batch);
    const char *error = strcmp(state, "stalled") == 0 || strcmp(state, "retrying") == 0 ? batch->last_error : NULL;
    size_t errlen = error != NULL ? strcspn(error, "\n") : 0;
    if (errlen >= sizeof(c->error))
        errlen = sizeof(c->error) - 1;
    pthread_mutex_lock(&c->status_mutex);
    int changed = c->state != state || strlen(c->error) != errlen || (errlen != 0 && memcmp(c->error, error, errlen) != 0);
    if (changed) {
        c->state = state;
        memcpy(c->error, error != NULL ? error : "", errlen);
        c->error[errlen] = '\0';
    }
    pthread_mutex_unlock(&c->status_mutex);
    if (changed)
        sk_health_info_set(c->health, state, error);
}

int sk_kafka_consumer_status(sk_kafka_consumer_status_t *out)
{
    if (!atomic_load(&status.active))
        return -1;
    pthread_mutex_lock(&status.status_mutex);
    out->state = status.state;
    snprintf(out->error, sizeof(out->error), "%s", status.error);
    pthread_mutex_unlock(&status.status_mutex);
    out->pending = (size_t)atomic_load(&status.npending);
    out->oldest_seconds = oldest_age_seconds();
    out->lag = -1;
    pthread_mutex_lock(&status.lag_mutex);
    for (int p = 0; status.rk != NULL && p != SK_KAFKA_MAX_PARTITIONS; ++p) {
        int64_t lag;
        if (status.assigned[p] && (lag = partition_lag(p)) >= 0)
            out->lag = (out->lag < 0 ? 0 : out->lag) + lag;
    }
    pthread_mutex_unlock(&status.lag_mutex);
    return 0;
}
