/*
 * consumer.h: the at-least-once consumer-group member that feeds batches of messages to consumer.lua.
 *
 * It runs on a thread host of its own (core/host.h: a loop and a Lua VM of role sk_kafka_consumer_role, as every
 * worker's), so the script can use the redis and mysql bindings exactly like a request handler. An offset is stored (and later
 * auto-committed) only after the script returned true for the batch holding its message; a failing batch is retried, split or
 * dead-lettered as the return contract says (batch.h), and a dead letter is committed only once it was delivered.
 */
#ifndef SK_KAFKA_CONSUMER_H
#define SK_KAFKA_CONSUMER_H

#include <stddef.h>
#include <stdint.h>
#include "../../core/config.h"
#include "../../core/vm.h"

/** the consumer's VM role: consumer.lua, which returns the function called on each batch */
extern const sk_vm_role_t sk_kafka_consumer_role;

/**
 * Starts the consumer thread (main thread, after sk_bindings_init). Subscribes group kafka.group (default
 * "seckilld") to kafka.topic, builds the VM of consumer.lua from `scripts` and serves until
 * sk_kafka_consumer_stop. loop_id names the thread's loop in metrics (the number of workers).
 * If `required` is 0 and the snapshot has no consumer.lua, or Kafka is not configured, logs why and returns 0 without
 * starting (role "all"); with `required` (role "consumer") that is an error. Returns 0 or -1 after logging.
 */
int sk_kafka_consumer_start(sk_config_t *cfg, sk_scripts_t *scripts, unsigned loop_id, int required);

/** asks the consumer to finish its batch (bounded by kafka.shutdown_timeout_ms), commit what finished, leave the
 * group, and joins the thread. Main thread; blocks. Harmless if the consumer is not running or already stopped. */
void sk_kafka_consumer_stop(void);

/** builds a VM of the new scripts snapshot and hands it to the consumer: the batch in flight ends on the old VM, the
 * next runs on the new one; keeps the old one (and logs why) if the new one fails to load. Main thread. Harmless if
 * the consumer is not running. */
void sk_kafka_consumer_reload(sk_scripts_t *scripts);

/** a snapshot of the consumer for scripts and admin routes */
typedef struct st_sk_kafka_consumer_status_t {
    /** "idle" (nothing pending), "ok" (processing), "retrying" (a failed batch is split or a message retried after an
     * error), "stalled" (consumer.lua reported a transient failure: the batch is retried until it succeeds) */
    const char *state;
    /** the first line of the last error while retrying or stalled, else "" */
    char error[256];
    /** messages fetched and held, not yet processed */
    size_t pending;
    /** total lag over the assigned partitions, -1 when unknown (nothing assigned yet, no watermarks) */
    int64_t lag;
    /** age in seconds (Kafka timestamps) of the oldest pending message, 0 when none */
    double oldest_seconds;
} sk_kafka_consumer_status_t;

/** fills `out`; returns 0, or -1 when this process runs no consumer. Any thread; never blocks on the network. */
int sk_kafka_consumer_status(sk_kafka_consumer_status_t *out);

#endif
