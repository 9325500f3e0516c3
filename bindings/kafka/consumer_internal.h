/*
 * consumer_internal.h: what consumer.c (its sources of work, start/stop, the batch callbacks), consumer_group.c
 * (pausing, rebalances) and consumer_status.c (lag, the stall, /healthz and consumer_status) share. Private to those
 * files. The consumer's state is consumer.c's (the batches a state machine of their own, batch.h, that it embeds);
 * the group's pause state is consumer_group.c's, and what other threads read is consumer_status.c's, each behind the
 * functions below.
 */
#ifndef SK_KAFKA_CONSUMER_INTERNAL_H
#define SK_KAFKA_CONSUMER_INTERNAL_H

#include "../../core/host.h"
#include "../../core/metrics.h"
#include "../../core/vm.h"
#include "batch.h"
#include "producer.h"

/** partitions of the topic tracked for the lag metric */
#define SK_KAFKA_MAX_PARTITIONS 1024

/** the consumer's state; one per process. Written by consumer.c alone, on the consumer thread (start and stop on the
 * main thread before and after it); consumer_group.c reads it. What other threads read is consumer_status.c's own. */
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
    /* the pending messages and what happens to them */
    sk_kafka_batch_t batch;
    sk_timer_t backoff;
    sk_deferred_t kick;
} sk_kafka_consumer_state_t;

/** the one consumer (defined in consumer.c) */
extern sk_kafka_consumer_state_t sk_kafka_consumer;

/* ===== consumer_group.c ===== */

/** registers the group's metrics (pauses); main thread, before the consumer starts */
void sk_kafka_group_init(void);
/** after any change to pending or to the retry state: pauses or resumes the assigned partitions and publishes the
 * state (consumer_status.c) */
void sk_kafka_group_update(void);
/** the rebalance callback (served inside rd_kafka_consumer_poll or rd_kafka_consumer_close, on the consumer thread) */
void sk_kafka_group_on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts, void *opaque);

/* ===== consumer_status.c ===== */

/** registers the consumer's metrics (lag, stall, oldest pending message) and its /healthz status; main thread */
void sk_kafka_status_init(void);
/** the consumer's handle, for the lag (NULL: the consumer closed, before rk is destroyed); any thread */
void sk_kafka_status_attach(rd_kafka_t *rk);
/** from now on sk_kafka_consumer_status answers (the consumer runs in this process) */
void sk_kafka_status_set_active(void);
/** the assigned partitions of the topic (for pausing them all), added to `out` */
void sk_kafka_status_assigned(rd_kafka_topic_partition_list_t *out);
/** publishes the batch's pending count, oldest timestamp, stall and state for other threads; consumer thread */
void sk_kafka_status_publish(sk_kafka_batch_t *batch);
/** the next offset to process of `partition` is now `next` (for the lag metric) */
void sk_kafka_status_set_next_offset(int32_t partition, int64_t next);
/** marks partitions assigned (1) or not (0), forgetting their next offsets */
void sk_kafka_status_set_assigned(const rd_kafka_topic_partition_list_t *parts, int assigned);

#endif
