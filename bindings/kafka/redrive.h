/*
 * redrive.h: `seckilld --redrive-dlq`, the command that moves dead letters back to the orders topic once the
 * reason they failed is fixed.
 */
#ifndef SK_KAFKA_REDRIVE_H
#define SK_KAFKA_REDRIVE_H

#include "../../core/config.h"

/**
 * Moves every dead letter not redriven yet from kafka.dead_letter_topic back to kafka.topic, each exactly once across
 * runs (one run at a time), and prints "redriven N" on stdout. The progress is the committed offsets of consumer group
 * "<kafka.group>.redrive" on the dead-letter topic: every partition is read from there to its end, each message is
 * produced (idempotent, acks=all) with its key, value and own headers plus `redriven-from: <partition>:<offset>`,
 * and an offset is committed (synchronously) only after every message before it was delivered. A crash between a
 * delivery and its commit redrives that message again on the next run; the consumer writes idempotently.
 * Refuses embedded mode (the mock cluster lives inside the server process). Main thread; blocks; no event loop.
 * Returns the process exit status: 0, or 1 after logging the error.
 */
int sk_kafka_redrive_main(sk_config_t *cfg);

#endif
