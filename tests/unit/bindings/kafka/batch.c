/* tests bindings/kafka/batch.c: the consumer's return contract, with fake messages and no broker, no Lua, no loop */
#include <stdlib.h>
#include <string.h>
#include "../../../../bindings/kafka/batch.h"
#include "../../../../core/log.h"
#include "../../test.h"

/* ===== a fake owner: it records what the state machine asks for ===== */

#define MAX_RECORDS 64

static struct {
    size_t runs, run_n[MAX_RECORDS];
    rd_kafka_message_t *run_head[MAX_RECORDS];
    size_t dead_letters;
    rd_kafka_message_t *dead_lettered[MAX_RECORDS];
    char dead_letter_error[256];
    rd_kafka_resp_err_t dead_letter_result; /* what dead_letter returns at once */
    size_t stores;
    struct {
        int32_t partition;
        int64_t offset;
    } stored[MAX_RECORDS];
    size_t schedules;
    uint64_t delay[MAX_RECORDS];
    size_t destroyed;
} rec;

static void on_run(sk_kafka_batch_t *b, size_t n)
{
    rec.run_n[rec.runs] = n;
    rec.run_head[rec.runs++] = sk_kafka_batch_at(b, 0);
}

static rd_kafka_resp_err_t on_dead_letter(sk_kafka_batch_t *b, rd_kafka_message_t *m, const char *error)
{
    rec.dead_lettered[rec.dead_letters++] = m;
    snprintf(rec.dead_letter_error, sizeof(rec.dead_letter_error), "%s", error);
    return rec.dead_letter_result;
}

static void on_store(sk_kafka_batch_t *b, rd_kafka_topic_partition_list_t *offsets)
{
    for (int i = 0; i != offsets->cnt; ++i) {
        ok(strcmp(offsets->elems[i].topic, "orders") == 0, "stored under the consumed topic");
        rec.stored[rec.stores].partition = offsets->elems[i].partition;
        rec.stored[rec.stores++].offset = offsets->elems[i].offset;
    }
}

static void on_schedule(sk_kafka_batch_t *b, uint64_t delay_ms)
{
    rec.delay[rec.schedules++] = delay_ms;
}

static void on_destroy(rd_kafka_message_t *m)
{
    ++rec.destroyed;
    free(m);
}

static const sk_kafka_batch_callbacks_t callbacks = {
    .run = on_run, .dead_letter = on_dead_letter, .store = on_store, .schedule = on_schedule, .destroy = on_destroy};

static sk_counter_t retries, dead_lettered, messages;

static void setup(sk_kafka_batch_t *b, size_t batch_size, unsigned max_failures)
{
    memset(&rec, 0, sizeof(rec));
    sk_kafka_batch_settings_t settings = {.batch_size = batch_size,
                                          .max_failures = max_failures,
                                          .backoff_ms = 100,
                                          .backoff_max_ms = 1000,
                                          .topic = "orders",
                                          .dlq_topic = "orders.dlq"};
    sk_kafka_batch_init(b, &callbacks, &settings, NULL);
    b->metrics.retries = &retries;
    b->metrics.dead_lettered = &dead_lettered;
    b->metrics.messages = &messages;
    atomic_store(&retries.value, 0);
    atomic_store(&dead_lettered.value, 0);
    atomic_store(&messages.value, 0);
}

/* a message as the consumer would fetch it; only the public fields the state machine reads */
static rd_kafka_message_t *push(sk_kafka_batch_t *b, int32_t partition, int64_t offset)
{
    rd_kafka_message_t *m = calloc(1, sizeof(*m));
    m->partition = partition;
    m->offset = offset;
    sk_kafka_batch_push(b, m, 1000 + offset);
    return m;
}

static uint64_t last_delay(void)
{
    return rec.schedules != 0 ? rec.delay[rec.schedules - 1] : (uint64_t)-1;
}

/* ===== the contract ===== */

static void test_true_stores(void)
{
    sk_kafka_batch_t b;
    setup(&b, 10, 5);
    push(&b, 0, 10);
    push(&b, 1, 20);
    push(&b, 0, 11);
    ok(sk_kafka_batch_oldest(&b) == 1010, "oldest pending timestamp");
    sk_kafka_batch_next(&b);
    ok(rec.runs == 1 && rec.run_n[0] == 3, "one batch of every pending message: %zu", rec.run_n[0]);
    ok(sk_kafka_batch_busy(&b) && strcmp(sk_kafka_batch_state(&b), "ok") == 0, "in flight");
    sk_kafka_batch_next(&b);
    ok(rec.runs == 1, "never two batches at once");
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_OK, NULL);
    ok(rec.stores == 2, "one offset per partition: %zu", rec.stores);
    ok(rec.stored[0].partition == 0 && rec.stored[0].offset == 12, "partition 0: the offset after its last message");
    ok(rec.stored[1].partition == 1 && rec.stored[1].offset == 21, "partition 1");
    ok(b.count == 0 && rec.destroyed == 3 && atomic_load(&messages.value) == 3, "popped and counted");
    ok(last_delay() == 0 && atomic_load(&retries.value) == 0, "next step at once, no retry");
    ok(strcmp(sk_kafka_batch_state(&b), "idle") == 0 && sk_kafka_batch_oldest(&b) == 0, "idle again");
    sk_kafka_batch_dispose(&b);
}

static void test_transient_retries_the_same_batch(void)
{
    static const uint64_t backoff[] = {100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000, 1000};
    sk_kafka_batch_t b;
    setup(&b, 10, 2);
    rd_kafka_message_t *first = push(&b, 0, 1);
    push(&b, 0, 2);
    push(&b, 1, 1);
    for (size_t i = 0; i != sizeof(backoff) / sizeof(backoff[0]); ++i) {
        sk_kafka_batch_next(&b);
        ok(rec.runs == i + 1 && rec.run_n[i] == 3 && rec.run_head[i] == first, "attempt %zu: the very same batch of 3 (ran %zu)",
           i + 1, rec.run_n[i]);
        sk_kafka_batch_done(&b, SK_KAFKA_BATCH_TRANSIENT, "mysql unavailable");
        ok(last_delay() == backoff[i], "attempt %zu: backoff %llu ms, capped (got %llu)", i + 1, (unsigned long long)backoff[i],
           (unsigned long long)last_delay());
        ok(sk_kafka_batch_retrying(&b) && b.stalled && strcmp(sk_kafka_batch_state(&b), "stalled") == 0, "stalled");
    }
    ok(strcmp(b.last_error, "mysql unavailable") == 0, "the error kept for /healthz: %s", b.last_error);
    ok(rec.dead_letters == 0 && rec.stores == 0 && b.count == 3, "never dead-lettered, nothing stored, nothing dropped");
    sk_kafka_batch_next(&b);
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_OK, NULL);
    ok(rec.stores == 2 && b.count == 0 && !sk_kafka_batch_retrying(&b), "stored once the backend is back");
    ok(strcmp(sk_kafka_batch_state(&b), "idle") == 0, "no longer stalled");

    /* a single message that fails transiently more often than max_failures is still never dead-lettered */
    push(&b, 2, 7);
    for (int i = 0; i != 6; ++i) {
        sk_kafka_batch_next(&b);
        sk_kafka_batch_done(&b, SK_KAFKA_BATCH_TRANSIENT, "redis unavailable");
    }
    sk_kafka_batch_next(&b);
    ok(rec.dead_letters == 0 && rec.run_n[rec.runs - 1] == 1, "a lone message retried, not dead-lettered");
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_OK, NULL);
    sk_kafka_batch_dispose(&b);
}

static void test_false_splits_and_dead_letters_at_once(void)
{
    sk_kafka_batch_t b;
    setup(&b, 10, 5);
    rd_kafka_message_t *m1 = push(&b, 0, 1), *m2 = push(&b, 0, 2), *m3 = push(&b, 0, 3);
    sk_kafka_batch_next(&b);
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_PERMANENT, "bad order");
    ok(last_delay() == 0 && rec.dead_letters == 0, "split at once, nothing dead-lettered yet");
    ok(strcmp(sk_kafka_batch_state(&b), "retrying") == 0, "retrying");
    sk_kafka_batch_next(&b);
    ok(rec.run_n[1] == 1 && rec.run_head[1] == m1, "then one at a time, in order");
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_OK, NULL);
    ok(rec.stores == 1 && rec.stored[0].offset == 2, "the good one stored");
    sk_kafka_batch_next(&b);
    ok(rec.run_head[2] == m2 && rec.run_n[2] == 1, "the next one alone");
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_PERMANENT, "bad order\nstack traceback: ...");
    ok(last_delay() == 0, "no backoff");
    sk_kafka_batch_next(&b);
    ok(rec.dead_letters == 1 && rec.dead_lettered[0] == m2 && rec.runs == 3, "the single false is dead-lettered at once");
    ok(strcmp(rec.dead_letter_error, "bad order\nstack traceback: ...") == 0, "with its error");
    ok(rec.stores == 1, "its offset waits for the delivery");
    sk_kafka_batch_next(&b);
    ok(rec.runs == 3 && rec.dead_letters == 1, "nothing else while the dead letter is in flight");
    sk_kafka_batch_dead_lettered(&b, m2, RD_KAFKA_RESP_ERR_NO_ERROR, 0, 42);
    ok(rec.stores == 2 && rec.stored[1].offset == 3, "stored once delivered");
    ok(atomic_load(&dead_lettered.value) == 1, "counted");
    sk_kafka_batch_next(&b);
    ok(rec.run_head[3] == m3 && rec.run_n[3] == 1, "the rest, still one at a time");
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_OK, NULL);
    ok(rec.stores == 3 && rec.stored[2].offset == 4, "the rest stored, in order");
    ok(b.count == 0 && strcmp(sk_kafka_batch_state(&b), "idle") == 0 && b.split_remaining == 0, "done");
    ok(atomic_load(&retries.value) == 0, "no backoff anywhere");

    /* after the split, batches are whole again */
    for (int i = 0; i != 4; ++i)
        push(&b, 0, 10 + i);
    sk_kafka_batch_next(&b);
    ok(rec.run_n[rec.runs - 1] == 4, "a whole batch again: %zu", rec.run_n[rec.runs - 1]);
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_OK, NULL);
    sk_kafka_batch_dispose(&b);
}

static void test_raised_splits_then_dead_letters_after_max_failures(void)
{
    sk_kafka_batch_t b;
    setup(&b, 10, 3);
    rd_kafka_message_t *m1 = push(&b, 0, 1), *m2 = push(&b, 0, 2);
    sk_kafka_batch_next(&b);
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_RAISED, "attempt to index a nil value");
    ok(last_delay() == 100 && atomic_load(&retries.value) == 1, "split after a backoff");
    for (unsigned i = 1; i <= 3; ++i) {
        sk_kafka_batch_next(&b);
        ok(rec.run_head[i] == m1 && rec.run_n[i] == 1, "failure %u of the lone message", i);
        sk_kafka_batch_done(&b, SK_KAFKA_BATCH_RAISED, "attempt to index a nil value");
        ok(last_delay() > 0 && rec.dead_letters == 0, "retried with backoff");
    }
    rec.dead_letter_result = RD_KAFKA_RESP_ERR__QUEUE_FULL;
    sk_kafka_batch_next(&b);
    ok(rec.dead_letters == 1 && rec.dead_lettered[0] == m1 && rec.runs == 4, "max_failures reached: dead-lettered");
    ok(!sk_kafka_batch_busy(&b) && last_delay() > 0 && rec.stores == 0, "produce refused at once: retried, nothing stored");
    rec.dead_letter_result = RD_KAFKA_RESP_ERR_NO_ERROR;
    sk_kafka_batch_next(&b);
    ok(rec.dead_letters == 2 && rec.dead_lettered[1] == m1, "dead-lettered again");
    sk_kafka_batch_dead_lettered(&b, m1, RD_KAFKA_RESP_ERR__MSG_TIMED_OUT, 0, -1);
    ok(rec.stores == 0 && last_delay() > 0, "a failed delivery: not stored, retried");
    sk_kafka_batch_next(&b);
    sk_kafka_batch_dead_lettered(&b, m1, RD_KAFKA_RESP_ERR_NO_ERROR, 1, 5);
    ok(rec.stores == 1 && rec.stored[0].offset == 2 && atomic_load(&dead_lettered.value) == 1, "delivered: stored");
    sk_kafka_batch_next(&b);
    ok(rec.run_head[rec.runs - 1] == m2 && rec.run_n[rec.runs - 1] == 1, "the next message alone");
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_OK, NULL);
    ok(rec.stores == 2 && rec.stored[1].offset == 3 && b.count == 0, "and stored");
    ok(!sk_kafka_batch_retrying(&b) && b.head_failures == 0, "failures forgotten");
    sk_kafka_batch_dispose(&b);
}

static void test_revocation_mid_batch(void)
{
    sk_kafka_batch_t b;
    setup(&b, 2, 5);
    push(&b, 0, 1);
    push(&b, 1, 1);
    rd_kafka_message_t *p0 = push(&b, 0, 2);
    push(&b, 1, 2);
    sk_kafka_batch_next(&b);
    ok(rec.run_n[0] == 2, "a batch of 2 in flight");
    rd_kafka_topic_partition_list_t *revoked = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(revoked, "orders", 1);
    sk_kafka_batch_revoke(&b, revoked);
    rd_kafka_topic_partition_list_destroy(revoked);
    ok(b.count == 3 && rec.destroyed == 1, "the revoked partition's pending message dropped, the batch in flight kept");
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_OK, NULL);
    ok(rec.stores == 2 && b.count == 1, "what succeeded is stored (the revoked partition's store fails harmlessly)");
    sk_kafka_batch_next(&b);
    ok(rec.run_head[1] == p0 && rec.run_n[1] == 1, "the kept partition goes on");

    /* a batch that fails after its partitions were revoked is dropped, not retried */
    push(&b, 0, 3);
    sk_kafka_batch_revoke(&b, NULL);
    ok(b.count == 1, "revoke all: only the batch in flight stays");
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_TRANSIENT, "mysql unavailable");
    ok(b.count == 0 && rec.stores == 2 && last_delay() == 0, "a failed batch of revoked partitions is dropped, nothing stored");
    ok(!sk_kafka_batch_retrying(&b) && strcmp(sk_kafka_batch_state(&b), "idle") == 0, "and forgotten");

    /* a stall ends with the revocation of the stalled messages */
    push(&b, 0, 4);
    sk_kafka_batch_next(&b);
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_TRANSIENT, "mysql unavailable");
    ok(b.stalled, "stalled");
    sk_kafka_batch_revoke(&b, NULL);
    ok(b.count == 0 && !sk_kafka_batch_retrying(&b), "revoked: nothing held, nothing retried");

    /* a dead letter in flight survives a revocation; its report then stores it */
    rd_kafka_message_t *m = push(&b, 0, 5);
    push(&b, 0, 6);
    sk_kafka_batch_next(&b);
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_PERMANENT, "bad");
    sk_kafka_batch_next(&b);
    sk_kafka_batch_done(&b, SK_KAFKA_BATCH_PERMANENT, "bad");
    sk_kafka_batch_next(&b);
    ok(b.dlq_in_flight && rec.dead_lettered[rec.dead_letters - 1] == m, "dead letter in flight");
    sk_kafka_batch_revoke(&b, NULL);
    ok(b.count == 1, "it stays; the rest is dropped");
    size_t stores = rec.stores;
    sk_kafka_batch_dead_lettered(&b, m, RD_KAFKA_RESP_ERR_NO_ERROR, 0, 1);
    ok(b.count == 0 && rec.stores == stores + 1 && !sk_kafka_batch_busy(&b), "delivered and popped");
    sk_kafka_batch_dispose(&b);
}

static void test_many_messages(void)
{
    sk_kafka_batch_t b;
    setup(&b, 500, 5);
    for (int i = 0; i != 1200; ++i)
        push(&b, i % 6, i / 6);
    ok(b.count == 1200, "the FIFO grows");
    size_t runs = 0;
    while (b.count != 0 && runs < 10) {
        sk_kafka_batch_next(&b);
        sk_kafka_batch_done(&b, SK_KAFKA_BATCH_OK, NULL);
        ++runs;
    }
    ok(runs == 3 && rec.run_n[0] == 500 && rec.run_n[2] == 200, "batch_size at most: %zu runs", runs);
    ok(rec.destroyed == 1200 && atomic_load(&messages.value) == 1200, "every message freed once");
    sk_kafka_batch_dispose(&b);
}

int main(void)
{
    sk_log_level = SK_LOG_ERROR + 1; /* the state machine's warnings are expected here */
    test_true_stores();
    test_transient_retries_the_same_batch();
    test_false_splits_and_dead_letters_at_once();
    test_raised_splits_then_dead_letters_after_max_failures();
    test_revocation_mid_batch();
    test_many_messages();
    return done();
}
