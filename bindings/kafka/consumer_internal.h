/*
 * consumer_internal.h: what consumer.c (the thread, its queue, polling, start/stop, the batch callbacks),
 * consumer_group.c (pausing, rebalances) and consumer_status.c (lag, the stall, /healthz and consumer_status) share:
 * the consumer's state. Private to those files. The batches themselves are a state machine of their own (batch.h) that the state
 * embeds. Everything in it belongs to the consumer thread except where a field says otherwise.
 */
#ifndef SK_KAFKA_CONSUMER_INTERNAL_H
#define SK_KAFKA_CONSUMER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include "../../core/health.h"
#include "../../core/host.h"
#include "../../core/metrics.h"
#include "../../core/vm.h"
#include "batch.h"
#include "producer.h"

/** partitions of the topic tracked for the lag metric */
#define SK_KAFKA_MAX_PARTITIONS 1024

/** the consumer's state; one per process */
typedef struct st_sk_kafka_consumer_state_t {
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    int pipefds[2];
    h2o_socket_t *sock;
    /** the thread, its loop (host.loop, whose id is the number of workers), the VM of consumer.lua (host.vm), reload
     * hand-over and drain (core/host.h) */
    sk_host_t host;
    /** main thread: the host was started; the generation of the newest VM built */
    int running;
    unsigned generation;
    /* settings */
    size_t max_pending;
    unsigned poll_interval_ms; /* min(1000, max.poll.interval.ms / 4): the loop polls at least this often */
    sk_timer_t poll_timer;
    int paused; /* the assigned partitions are paused (pending full, or a batch being retried) */
    /* the pending messages and what happens to them */
    sk_kafka_batch_t batch;
    sk_timer_t backoff;
    sk_deferred_t kick;
    /* lag: guarded by lag_mutex since /metrics renders on a worker */
    pthread_mutex_t lag_mutex;
    int64_t next_offset[SK_KAFKA_MAX_PARTITIONS]; /* next offset to process, -1 unknown */
    char assigned[SK_KAFKA_MAX_PARTITIONS];
    /* read by other threads (/metrics, /healthz, kafka.consumer_status) */
    _Atomic int active;           /* the consumer was started in this process */
    _Atomic long npending;        /* count, mirrored */
    _Atomic int64_t oldest_ts;    /* Kafka timestamp (epoch ms) of the oldest pending message, 0 if none */
    _Atomic int stalled_flag;     /* stalled, mirrored */
    pthread_mutex_t status_mutex; /* guards state and error below */
    const char *state;            /* "idle", "ok", "retrying", "stalled" (static strings) */
    char error[256];              /* first line of the last error while retrying or stalled, else "" */
    sk_health_info_t *health;
    sk_counter_t *pauses;
} sk_kafka_consumer_state_t;

/** the one consumer (defined in consumer.c) */
extern sk_kafka_consumer_state_t sk_kafka_consumer;

/* ===== consumer_group.c ===== */

/** after any change to pending or to the retry state: pauses or resumes the assigned partitions and publishes the
 * state (consumer_status.c) */
void sk_kafka_group_update(void);
/** the rebalance callback (served inside rd_kafka_consumer_poll or rd_kafka_consumer_close, on the consumer thread) */
void sk_kafka_group_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque);

/* ===== consumer_status.c ===== */

/** registers the consumer's metrics (lag, stall, oldest pending message) and its /healthz status; main thread */
void sk_kafka_status_init(void);
/** publishes npending, the oldest timestamp, the stall and the state for other threads; consumer thread */
void sk_kafka_status_publish(void);
/** the next offset to process of `partition` is now `next` (for the lag metric) */
void sk_kafka_status_set_next_offset(int32_t partition, int64_t next);
/** marks partitions assigned (1) or not (0), forgetting their next offsets */
void sk_kafka_status_set_assigned(const rd_kafka_topic_partition_list_t *parts, int assigned);

#endif
