/*
 * kafka_consumer_internal.h: what kafka_consumer.c (the thread, its queue, rebalances, lag, start/stop) and
 * kafka_batch.c (pending messages, batches, retries, dead letters, offsets) share: the consumer's state. Private to
 * those two files. Everything in it belongs to the consumer thread except where a field says otherwise.
 */
#ifndef SK_KAFKA_CONSUMER_INTERNAL_H
#define SK_KAFKA_CONSUMER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include "../core/metrics.h"
#include "../core/vm.h"
#include "kafka_producer.h"

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
    int64_t next_offset[SK_KAFKA_MAX_PARTITIONS]; /* next offset to process, -1 unknown */
    char assigned[SK_KAFKA_MAX_PARTITIONS];
    struct {
        sk_counter_t *batches_ok, *batches_failed, *messages, *retries, *dead_lettered;
    } metrics;
} sk_kafka_consumer_state_t;

/** the one consumer (defined in kafka_consumer.c) */
extern sk_kafka_consumer_state_t sk_kafka_consumer;

/* ===== kafka_consumer.c ===== */

/** runs drain + sk_kafka_batch_start on the next loop iteration, outside any Lua or librdkafka call stack */
void sk_kafka_consumer_kick(void);
/** swaps in the VM of a pending reload, if any (keeps the old VM if the new one fails to load); between batches */
void sk_kafka_consumer_apply_reload(void);

/* ===== kafka_batch.c ===== */

/** appends a message to the pending FIFO (which takes ownership), growing the ring if it is full */
void sk_kafka_pending_push(rd_kafka_message_t *m);
/** removes the first n pending messages, destroying them if `destroy` */
void sk_kafka_pending_pop(size_t n, int destroy);
/** keeps the first `keep` pending messages and those of partitions not in `revoked` (NULL: all revoked), destroying
 * the others */
void sk_kafka_pending_drop_revoked(size_t keep, const rd_kafka_topic_partition_list_t *revoked);
/** starts the next batch (or dead-letters the head message) unless one is in flight, a backoff runs, nothing is
 * pending or the consumer is stopping */
void sk_kafka_batch_start(void);

#endif
