/*
 * batch.h: the consumer's batches, at least once, as a state machine with no thread, no Lua and no broker: the FIFO
 * of pending messages, what runs next (a batch, the same batch again, one message at a time), when a message goes to
 * the dead-letter topic, which offsets to store, and how long to back off. Its owner (consumer.c) feeds it messages
 * (sk_kafka_batch_push), outcomes (sk_kafka_batch_done, sk_kafka_batch_dead_lettered) and revocations, and provides
 * the callbacks that act: run the script, produce a dead letter, store offsets, schedule the next step.
 *
 * Batches are the head of the FIFO; they leave it only when done. What the script returns decides what happens:
 *
 *   SK_KAFKA_BATCH_OK         the batch is done: offset+1 of each of its messages is stored.
 *   SK_KAFKA_BATCH_TRANSIENT  (nil, err: a backend is down) the same batch, the very same messages, is run again
 *                             after a backoff (backoff_ms doubling up to backoff_max_ms) for as long as it takes.
 *                             Never split, never dead-lettered, nothing stored. The batch is "stalled" meanwhile.
 *   SK_KAFKA_BATCH_PERMANENT  (false, err: something in the batch can never succeed) the batch is split at once and
 *                             its messages run one at a time, in order; a message that is PERMANENT on its own is
 *                             dead-lettered at once. A single message that is TRANSIENT is retried as above.
 *   SK_KAFKA_BATCH_RAISED     (a bug or an unforeseen failure) split the same way, after a backoff; a single message
 *                             that raises is retried with backoff and dead-lettered after max_failures failures.
 *
 * A message's offset is stored only once its dead letter's delivery is confirmed. Nothing is ever skipped, and a
 * partition's messages are handled in order. Every function runs on the owner's loop thread.
 */
#ifndef SK_KAFKA_BATCH_H
#define SK_KAFKA_BATCH_H

#include <stddef.h>
#include <stdint.h>
#include <librdkafka/rdkafka.h>
#include "../../core/metrics.h"

/** what the script made of a batch */
typedef enum {
    SK_KAFKA_BATCH_OK,        /* returned true */
    SK_KAFKA_BATCH_TRANSIENT, /* returned nil, err */
    SK_KAFKA_BATCH_PERMANENT, /* returned false, err */
    SK_KAFKA_BATCH_RAISED,    /* raised, or returned nothing */
} sk_kafka_batch_outcome_t;

typedef struct st_sk_kafka_batch_t sk_kafka_batch_t;

/** what the owner does for the state machine */
typedef struct st_sk_kafka_batch_callbacks_t {
    /** runs the script on the first n pending messages (sk_kafka_batch_at(b, 0 .. n-1)), and later calls
     * sk_kafka_batch_done exactly once (possibly before run returns) */
    void (*run)(sk_kafka_batch_t *b, size_t n);
    /** produces m to the dead-letter topic with `error` as its reason. Returns RD_KAFKA_RESP_ERR_NO_ERROR and later
     * calls sk_kafka_batch_dead_lettered (never before returning), or an error at once (then retried after a
     * backoff). */
    rd_kafka_resp_err_t (*dead_letter)(sk_kafka_batch_t *b, rd_kafka_message_t *m, const char *error);
    /** stores `offsets` (per partition: the offset after the last message done) for the next commit */
    void (*store)(sk_kafka_batch_t *b, rd_kafka_topic_partition_list_t *offsets);
    /** calls sk_kafka_batch_next after delay_ms: 0 means from the loop, after the current call stack; a delay is a
     * backoff, during which sk_kafka_batch_next must not be called */
    void (*schedule)(sk_kafka_batch_t *b, uint64_t delay_ms);
    /** frees a message the FIFO owned */
    void (*destroy)(rd_kafka_message_t *m);
} sk_kafka_batch_callbacks_t;

typedef struct st_sk_kafka_batch_settings_t {
    /** messages per run, at least 1 (kafka.batch_size) */
    size_t batch_size;
    /** errors one message may raise on its own before it is dead-lettered (kafka.max_failures) */
    unsigned max_failures;
    /** backoff after the first failure, doubling per consecutive failure up to backoff_max_ms */
    unsigned backoff_ms, backoff_max_ms;
    /** the topic consumed (its messages' offsets are stored under it) and the dead-letter topic (for log lines) */
    const char *topic, *dlq_topic;
} sk_kafka_batch_settings_t;

/** The state machine. The owner reads the fields (for pausing, status and shutdown); only batch.c writes them. */
struct st_sk_kafka_batch_t {
    const sk_kafka_batch_callbacks_t *cb;
    sk_kafka_batch_settings_t settings;
    /** the owner's */
    void *data;
    /** the pending messages, a ring buffer; count is how many */
    struct st_sk_kafka_batch_entry_t {
        rd_kafka_message_t *m;
        int64_t timestamp;
    } * ring;
    size_t ring_cap, head, count;
    /** the batch being run: the first in_flight pending messages (0: none) */
    size_t in_flight;
    /** the head message is being dead-lettered */
    int dlq_in_flight;
    /** a batch started before a revocation (batch_gen != assign_gen) keeps only what succeeded */
    unsigned batch_gen, assign_gen;
    /** messages still to run one at a time after a failed batch */
    size_t split_remaining;
    /** the size of the batch to run again after a transient failure, or 0 */
    size_t retry_n;
    /** errors the head message raised when run alone */
    unsigned head_failures;
    /** the head message, alone, was PERMANENT: it goes to the dead-letter topic */
    int dead_letter_now;
    /** failed attempts (of any kind) since the last success */
    unsigned consecutive_failures;
    /** the last attempt was TRANSIENT; since when (sk_now_ms) */
    int stalled;
    uint64_t stalled_since;
    /** the last error, as the script gave it */
    char last_error[512];
    /** the Kafka timestamp (epoch ms) of the oldest pending message, 0 if none; recomputed when dirty */
    int64_t oldest;
    int oldest_dirty;
    /** counters the owner may set (NULL: not counted) */
    struct {
        sk_counter_t *batches_ok, *batches_failed, *messages, *retries, *dead_lettered;
    } metrics;
};

/** prepares an empty state machine */
void sk_kafka_batch_init(sk_kafka_batch_t *b, const sk_kafka_batch_callbacks_t *cb, const sk_kafka_batch_settings_t *settings,
                         void *data);
/** destroys every pending message and frees the FIFO */
void sk_kafka_batch_dispose(sk_kafka_batch_t *b);

/** appends a message (the FIFO owns it from now on) with its Kafka timestamp (epoch ms, <= 0 if none) */
void sk_kafka_batch_push(sk_kafka_batch_t *b, rd_kafka_message_t *m, int64_t timestamp);
/** the i-th pending message (i < count) */
rd_kafka_message_t *sk_kafka_batch_at(const sk_kafka_batch_t *b, size_t i);
/** the Kafka timestamp (epoch ms) of the oldest pending message, 0 when none */
int64_t sk_kafka_batch_oldest(sk_kafka_batch_t *b);

/** takes the next step unless one is in flight or nothing is pending: dead-letters the head message, or runs the
 * next batch (the same one after a transient failure, one message after a failed batch, else up to batch_size) */
void sk_kafka_batch_next(sk_kafka_batch_t *b);
/** the completion of run: `error` is the script's message (NULL for OK), copied */
void sk_kafka_batch_done(sk_kafka_batch_t *b, sk_kafka_batch_outcome_t outcome, const char *error);
/** the completion of dead_letter for m: err is the delivery's result, partition and offset where it landed */
void sk_kafka_batch_dead_lettered(sk_kafka_batch_t *b, rd_kafka_message_t *m, rd_kafka_resp_err_t err, int32_t partition,
                                  int64_t offset);
/** partitions were revoked (NULL: all of them): drops their pending messages, except the batch in flight (or the
 * message being dead-lettered), whose completion then keeps only what succeeded; forgets any retry */
void sk_kafka_batch_revoke(sk_kafka_batch_t *b, const rd_kafka_topic_partition_list_t *revoked);

/** "idle" (nothing pending), "ok", "retrying" (a failed batch is split, or a message retried or being dead-lettered)
 * or "stalled" (a transient failure is being retried); static strings */
const char *sk_kafka_batch_state(const sk_kafka_batch_t *b);
/** 1 while a failure is being retried (the owner pauses fetching meanwhile) */
static inline int sk_kafka_batch_retrying(const sk_kafka_batch_t *b)
{
    return b->stalled || b->consecutive_failures != 0;
}
/** 1 while a batch or a dead letter is in flight */
static inline int sk_kafka_batch_busy(const sk_kafka_batch_t *b)
{
    return b->in_flight != 0 || b->dlq_in_flight;
}

#endif
