/*
 * kafka_consumer_internal.h: what kafka_consumer.c (the thread, its queue, polling, pausing, rebalances, start/stop),
 * kafka_batch.c (pending messages, batches, retries, dead letters, offsets) and kafka_consumer_status.c (lag, the
 * stall, /healthz and consumer_status) share: the consumer's state. Private to those files. Everything in it belongs
 * to the consumer thread except where a field says otherwise.
 */
#ifndef SK_KAFKA_CONSUMER_INTERNAL_H
#define SK_KAFKA_CONSUMER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include "../../core/health.h"
#include "../../core/metrics.h"
#include "../../core/vm.h"
#include "producer.h"

/** partitions of the topic tracked for the lag metric */
#define SK_KAFKA_MAX_PARTITIONS 1024

/** the consumer's state; one per process */
typedef struct st_sk_kafka_consumer_state_t {
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
    unsigned poll_interval_ms; /* min(1000, max.poll.interval.ms / 4): the loop polls at least this often */
    sk_timer_t poll_timer;
    int paused; /* the assigned partitions are paused (pending full, or a batch being retried) */
    /* pending messages, a ring buffer */
    rd_kafka_message_t **ring;
    size_t ring_cap, head, count;
    /* the batch in flight: the first `in_flight` messages of pending */
    size_t in_flight;
    int dlq_in_flight;
    unsigned batch_gen, assign_gen;
    size_t split_remaining; /* messages still to be processed one by one after a failed batch */
    size_t retry_n;         /* the size of the batch to retry after a transient failure (the same messages), or 0 */
    unsigned head_failures; /* raised errors of the head message when processed alone */
    int dead_letter_now;    /* the head message, alone, returned false: it goes to the dead-letter topic */
    unsigned consecutive_failures;
    int stalled;            /* the last attempt failed transiently (nil, err): retrying until the backend is back */
    uint64_t stalled_since; /* sk_now_ms() of the first transient failure of the stall */
    char last_error[512];
    int64_t oldest_local; /* Kafka timestamp (epoch ms) of the oldest pending message, 0 if none */
    int oldest_dirty;     /* oldest_local must be recomputed (messages left pending) */
    sk_timer_t backoff;
    sk_deferred_t kick;
    /* reload */
    pthread_mutex_t reload_mutex;
    sk_scripts_t *reload_scripts;
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
    char error[256];              /* first line of last_error while retrying or stalled, else "" */
    sk_health_info_t *health;
    struct {
        sk_counter_t *batches_ok, *batches_failed, *messages, *retries, *dead_lettered, *pauses;
    } metrics;
} sk_kafka_consumer_state_t;

/** the one consumer (defined in kafka_consumer.c) */
extern sk_kafka_consumer_state_t sk_kafka_consumer;

/* ===== kafka_consumer.c ===== */

/** runs drain + sk_kafka_batch_start on the next loop iteration, outside any Lua or librdkafka call stack */
void sk_kafka_consumer_kick(void);
/** swaps in the VM of a pending reload, if any (keeps the old VM if the new one fails to load); between batches */
void sk_kafka_consumer_apply_reload(void);
/** after any change to pending or to the retry state: pauses or resumes the assigned partitions and publishes the
 * state (kafka_consumer_status.c) */
void sk_kafka_consumer_update(void);

/* ===== kafka_batch.c ===== */

/** appends a message to the pending FIFO (which takes ownership), growing the ring if it is full */
void sk_kafka_pending_push(rd_kafka_message_t *m);
/** removes the first n pending messages, destroying them if `destroy` */
void sk_kafka_pending_pop(size_t n, int destroy);
/** keeps the first `keep` pending messages and those of partitions not in `revoked` (NULL: all revoked), destroying
 * the others */
void sk_kafka_pending_drop_revoked(size_t keep, const rd_kafka_topic_partition_list_t *revoked);
/** the Kafka timestamp (epoch ms) of the oldest pending message, 0 when none */
int64_t sk_kafka_pending_oldest(void);
/** starts the next batch (or dead-letters the head message) unless one is in flight, a backoff runs, nothing is
 * pending or the consumer is stopping */
void sk_kafka_batch_start(void);

/* ===== kafka_consumer_status.c ===== */

/** registers the consumer's metrics (lag, stall, oldest pending message) and its /healthz status; main thread */
void sk_kafka_status_init(void);
/** publishes npending, the oldest timestamp, the stall and the state for other threads; consumer thread */
void sk_kafka_status_publish(void);
/** the next offset to process of `partition` is now `next` (for the lag metric) */
void sk_kafka_status_set_next_offset(int32_t partition, int64_t next);
/** marks partitions assigned (1) or not (0), forgetting their next offsets */
void sk_kafka_status_set_assigned(const rd_kafka_topic_partition_list_t *parts, int assigned);

#endif
