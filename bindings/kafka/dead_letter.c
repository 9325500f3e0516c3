/*
 * dead_letter.c: the dead-letter copy of a message (dead_letter.h).
 */
#include <stdio.h>
#include <string.h>
#include "dead_letter.h"

static int is_reserved_header(const char *name)
{
    return strcmp(name, "error") == 0 || strncmp(name, "original.", 9) == 0;
}

const char *sk_kafka_dead_letter(sk_op_t *op, const rd_kafka_message_t *m, const char *error, sk_kafka_dr_cb cb,
                                 rd_kafka_resp_err_t *code)
{
    char buf[32];
    rd_kafka_headers_t *own, *hdrs = rd_kafka_headers_new(8);
    /* the message's own headers travel with it (a redrive gives them back), ours are added after */
    if (rd_kafka_message_headers(m, &own) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *value;
        size_t size;
        for (size_t i = 0; rd_kafka_header_get_all(own, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR; ++i)
            if (!is_reserved_header(name))
                rd_kafka_header_add(hdrs, name, -1, value, value != NULL ? (ssize_t)size : 0);
    }
    /* the first line: the message, without the traceback (which is in the log) */
    rd_kafka_header_add(hdrs, "error", -1, error, (ssize_t)strcspn(error, "\n"));
    rd_kafka_header_add(hdrs, "original.topic", -1, rd_kafka_topic_name(m->rkt), -1);
    snprintf(buf, sizeof(buf), "%d", (int)m->partition);
    rd_kafka_header_add(hdrs, "original.partition", -1, buf, -1);
    snprintf(buf, sizeof(buf), "%lld", (long long)m->offset);
    rd_kafka_header_add(hdrs, "original.offset", -1, buf, -1);
    const char *err;
    if ((err = sk_kafka_produce(op, sk_kafka_settings.dlq_topic, RD_KAFKA_PARTITION_UA, m->payload, m->len, m->key, m->key_len,
                                hdrs, cb, code)) != NULL)
        rd_kafka_headers_destroy(hdrs); /* still ours */
    return err;
}
