/*
 * dead_letter.h: the copy of a message that goes to the dead-letter topic (kafka.dead_letter_topic).
 */
#ifndef SK_KAFKA_DEAD_LETTER_H
#define SK_KAFKA_DEAD_LETTER_H

#include "producer.h"

/**
 * Produces a copy of m to the dead-letter topic: its key, value and own headers (except any named `error` or
 * `original.*`), plus `error` (the first line of `error`: the message without its traceback), `original.topic`,
 * `original.partition` and `original.offset`. Like sk_kafka_produce (core/op.h's shape): returns NULL and cb(op, dr,
 * errstr) is called once later on the calling loop, or one of err.h's constants at once and cb is never called; code
 * (may be NULL) receives librdkafka's code either way. m must outlive the call only.
 */
const char *sk_kafka_dead_letter(sk_op_t *op, const rd_kafka_message_t *m, const char *error, sk_kafka_dr_cb cb,
                                 rd_kafka_resp_err_t *code);

#endif
