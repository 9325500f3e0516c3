/*
 * consumer_status.c: what the consumer tells the rest of the process: the lag metric, the stall gauge, the age
 * of the oldest message it holds but has not processed, its /healthz status and sk_kafka_consumer_status() (which
 * kafka.consumer_status() returns to scripts on any worker).
 *
 * The consumer thread publishes (sk_kafka_status_publish, after every change) into atomics and a mutex-guarded
 * state; readers on other threads never touch the consumer's own fields. The lag is computed by the reader from
 * librdkafka's cached watermarks and positions (no network round trip) under lag_mutex, which also guards `rk`.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "../../core/health.h"
#include "../../core/log.h"
#include "../../core/metrics.h"
#include "consumer.h"
#include "consumer_internal.h"

/* ===== lag ===== */

void sk_kafka_status_set_next_offset(int32_t partition, int64_t next)
{
    if (partition < 0 || partition >= SK_KAFKA_MAX_PARTITIONS)
        return;
    pthread_mutex_lock(&sk_kafka_consumer.lag_mutex);
    sk_kafka_consumer.next_offset[partition] = next;
    pthread_mutex_unlock(&sk_kafka_consumer.lag_mutex);
}

void sk_kafka_status_set_assigned(const rd_kafka_topic_partition_list_t *parts, int assigned)
{
    pthread_mutex_lock(&sk_kafka_consumer.lag_mutex);
    for (int i = 0; i != parts->cnt; ++i) {
        int32_t p = parts->elems[i].partition;
        if (p >= 0 && p < SK_KAFKA_MAX_PARTITIONS) {
            sk_kafka_consumer.assigned[p] = (char)assigned;
            sk_kafka_consumer.next_offset[p] = -1;
        }
    }
    pthread_mutex_unlock(&sk_kafka_consumer.lag_mutex);
}

/* the lag of an assigned partition (high watermark minus the next offset to process), -1 when unknown; lag_mutex
 * held, rk not NULL */
static int64_t partition_lag(int p)
{
    int64_t lo, hi, next = sk_kafka_consumer.next_offset[p];
    if (rd_kafka_get_watermark_offsets(sk_kafka_consumer.rk, sk_kafka_settings.topic, p, &lo, &hi) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        hi < 0)
        return -1;
    if (next < 0) {
        rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(list, sk_kafka_settings.topic, p);
        if (rd_kafka_position(sk_kafka_consumer.rk, list) == RD_KAFKA_RESP_ERR_NO_ERROR)
            next = list->elems[0].offset;
        rd_kafka_topic_partition_list_destroy(list);
        if (next < 0)
            return -1;
    }
    return hi > next ? hi - next : 0;
}

static void render_lag(sk_metrics_buf_t *buf, const char *name)
{
    pthread_mutex_lock(&sk_kafka_consumer.lag_mutex);
    for (int p = 0; sk_kafka_consumer.rk != NULL && p != SK_KAFKA_MAX_PARTITIONS; ++p) {
        int64_t lag;
        if (sk_kafka_consumer.assigned[p] && (lag = partition_lag(p)) >= 0)
            sk_metrics_buf_printf(buf, "%s{topic=\"%s\",partition=\"%d\"} %lld\n", name, sk_kafka_settings.topic, p,
                                  (long long)lag);
    }
    pthread_mutex_unlock(&sk_kafka_consumer.lag_mutex);
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
    int64_t oldest = atomic_load(&sk_kafka_consumer.oldest_ts), now = wall_ms();
    return oldest > 0 && now > oldest ? (now - oldest) / 1000.0 : 0;
}

static void render_stalled(sk_metrics_buf_t *buf, const char *name)
{
    sk_metrics_buf_printf(buf, "%s %d\n", name, atomic_load(&sk_kafka_consumer.stalled_flag));
}

static void render_oldest(sk_metrics_buf_t *buf, const char *name)
{
    sk_metrics_buf_printf(buf, "%s %.3f\n", name, oldest_age_seconds());
}

/* ===== publishing ===== */

void sk_kafka_status_init(void)
{
    sk_metrics_gauge_fn("seckilld_kafka_consumer_lag", "messages not yet processed, per assigned partition", render_lag);
    sk_metrics_gauge_fn("seckilld_kafka_consumer_stalled",
                        "1 while consumer.lua reports a transient failure (nil, err) and its batch is being retried",
                        render_stalled);
    sk_metrics_gauge_fn("seckilld_kafka_consumer_oldest_unpersisted_seconds",
                        "age (from its Kafka timestamp) of the oldest message the consumer holds unprocessed, 0 if none",
                        render_oldest);
    sk_kafka_consumer.health = sk_health_register_info("consumer", "idle");
}

void sk_kafka_status_publish(void)
{
    sk_kafka_consumer_state_t *c = &sk_kafka_consumer;
    atomic_store(&c->npending, (long)c->batch.count);
    atomic_store(&c->oldest_ts, sk_kafka_batch_oldest(&c->batch));
    atomic_store(&c->stalled_flag, c->batch.stalled);
    const char *state = sk_kafka_batch_state(&c->batch);
    const char *error = strcmp(state, "stalled") == 0 || strcmp(state, "retrying") == 0 ? c->batch.last_error : NULL;
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
    if (!atomic_load(&sk_kafka_consumer.active))
        return -1;
    pthread_mutex_lock(&sk_kafka_consumer.status_mutex);
    out->state = sk_kafka_consumer.state;
    snprintf(out->error, sizeof(out->error), "%s", sk_kafka_consumer.error);
    pthread_mutex_unlock(&sk_kafka_consumer.status_mutex);
    out->pending = (size_t)atomic_load(&sk_kafka_consumer.npending);
    out->oldest_seconds = oldest_age_seconds();
    out->lag = -1;
    pthread_mutex_lock(&sk_kafka_consumer.lag_mutex);
    for (int p = 0; sk_kafka_consumer.rk != NULL && p != SK_KAFKA_MAX_PARTITIONS; ++p) {
        int64_t lag;
        if (sk_kafka_consumer.assigned[p] && (lag = partition_lag(p)) >= 0)
            out->lag = (out->lag < 0 ? 0 : out->lag) + lag;
    }
    pthread_mutex_unlock(&sk_kafka_consumer.lag_mutex);
    return 0;
}
