/* tests bindings/redis/optimistic.c: the optimistic transaction's state machine, driven from C against the harness's
 * redis-server (SK_REDIS_PORT): read-only, executed, a conflict retried, conflicts exhausted, fn's error, EXECABORT,
 * the gate's order and refusal, a release while running. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "../../../../bindings/redis/metrics.h"
#include "../../../../bindings/redis/optimistic.h"
#include "../../test.h"

static sk_loop_t loop;
static sk_timer_t tick;
static sk_redis_pool_t *pool;
static char prefix[64];
static int seq, freed;

typedef struct st_owner_t owner_t;
struct st_owner_t {
    sk_redis_optimistic_t tx;
    void (*fn)(owner_t *o);
    void (*call)(owner_t *o);
    char key[96];
    int fns, calls, dones, fn_order;
    sk_redis_optimistic_result_t result;
    const char *errstr;
    char errmsg[256];
    redisReply *exec; /* a copy of the EXEC reply */
};

static void on_tick(sk_timer_t *t)
{
}

static void run_until(int *flag, uint64_t ms)
{
    uint64_t end = sk_now_ms() + ms;
    while (!*flag && sk_now_ms() < end) {
        sk_timer_start(&loop, &tick, 1, on_tick);
        sk_loop_run_once(&loop);
    }
    sk_timer_stop(&loop, &tick);
}

/* a command from NULL-terminated words */
static sk_redis_cmd_t *cmd(const char *word, ...)
{
    const char *argv[8];
    size_t lens[8];
    int argc = 0;
    va_list ap;
    va_start(ap, word);
    for (const char *w = word; w != NULL; w = va_arg(ap, const char *)) {
        argv[argc] = w;
        lens[argc++] = strlen(w);
    }
    va_end(ap);
    return sk_redis_cmd_new(argc, argv, lens);
}

/* ===== the owner: what lua_tx.c does, without Lua ===== */

static void on_fn(sk_redis_optimistic_t *tx)
{
    owner_t *o = (owner_t *)tx;
    ++o->fns;
    o->fn_order = ++seq;
    o->fn(o);
}

static void on_call(sk_redis_optimistic_t *tx)
{
    owner_t *o = (owner_t *)tx;
    ++o->calls;
    o->call(o);
}

static void on_done(sk_op_t *op, sk_redis_optimistic_result_t result, const char *errstr)
{
    owner_t *o = H2O_STRUCT_FROM_MEMBER(owner_t, tx.super, op);
    sk_redis_optimistic_t *tx = &o->tx;
    ++o->dones;
    o->result = result;
    o->errstr = errstr;
    ok(result == tx->result && errstr == tx->errstr, "%s: on_done reports the transaction's result and errstr", o->key);
    snprintf(o->errmsg, sizeof(o->errmsg), "%s", tx->errmsg != NULL ? tx->errmsg : "");
}

static void on_free(sk_redis_optimistic_t *tx)
{
    ++freed;
}

static const sk_redis_optimistic_callbacks_t callbacks = {on_fn, on_call, on_done, on_free};

/* starts a transaction watching and reading o->key */
static void start(owner_t *o, const char *name, unsigned tries, const char *gate, void (*fn)(owner_t *), void (*call)(owner_t *))
{
    memset(o, 0, sizeof(*o));
    snprintf(o->key, sizeof(o->key), "%s:%s", prefix, name);
    o->fn = fn;
    o->call = call;
    sk_redis_cmd_t **reads = malloc(sizeof(*reads));
    reads[0] = cmd("GET", o->key, NULL);
    sk_redis_optimistic_init(&o->tx, &loop, pool, &callbacks, tries, cmd("WATCH", o->key, NULL), reads, 1);
    sk_redis_optimistic_start(&o->tx, gate, gate != NULL ? strlen(gate) : 0, 1);
}

/* ends the scenario: keeps a copy of the EXEC reply, releases, and checks the machine let go of everything */
static void finish(owner_t *o)
{
    int before = freed;
    sk_redis_optimistic_release(&o->tx);
    ok(freed == before + 1, "%s: freed at release (nothing in flight)", o->key);
}

/* ===== fns ===== */

static void fn_readonly(owner_t *o)
{
    ok(o->tx.read_replies[0] != NULL && o->tx.read_replies[0]->type == REDIS_REPLY_NIL, "fn sees the read: nil");
    sk_redis_optimistic_fn_done(&o->tx);
}

static void fn_set(owner_t *o)
{
    sk_redis_optimistic_queue(&o->tx, cmd("SET", o->key, "v", NULL));
    sk_redis_optimistic_fn_done(&o->tx);
}

static void call_then_set(owner_t *o)
{
    ok(o->tx.call_reply != NULL && o->tx.call_reply->type == REDIS_REPLY_INTEGER, "on_call has the reply");
    fn_set(o);
}

/* fn writes the watched key outside MULTI (on the watched connection itself), which breaks its own WATCH */
static void fn_touch_first(owner_t *o)
{
    if (o->tx.attempt > 1) {
        fn_set(o);
        return;
    }
    sk_redis_cmd_t *c = cmd("INCR", o->key, NULL);
    ok(sk_redis_optimistic_call(&o->tx, c) == 0 && o->tx.state == SK_REDIS_OPTIMISTIC_CALLING, "tx call sent");
    free(c);
}

static void fn_touch_always(owner_t *o)
{
    sk_redis_cmd_t *c = cmd("INCR", o->key, NULL);
    sk_redis_optimistic_call(&o->tx, c);
    free(c);
}

static void fn_fail(owner_t *o)
{
    sk_redis_optimistic_fn_failed(&o->tx, "boom");
}

static void fn_malformed(owner_t *o)
{
    sk_redis_optimistic_queue(&o->tx, cmd("SET", o->key, NULL)); /* wrong arity: EXECABORT */
    sk_redis_optimistic_fn_done(&o->tx);
}

static uint64_t counter(sk_counter_t *c)
{
    return atomic_load(&c->value);
}

int main(void)
{
    const char *port = getenv("SK_REDIS_PORT");
    if (port == NULL || *port == '\0') {
        printf("not ok: SK_REDIS_PORT is not set: run through tests/run.sh (or source the services' env), which starts "
               "redis-server\n");
        return 1;
    }
    sk_redis_metrics_init();
    sk_loop_init(&loop, 0, NULL, NULL);
    sk_redis_pool_config_t cfg = {.ip = "127.0.0.1",
                                  .port = atoi(port),
                                  .pool_size = 1,
                                  .lease_max = 2,
                                  .lease_queue = 16,
                                  .connect_timeout_ms = 1000,
                                  .command_timeout_ms = 1000,
                                  .lease_wait_ms = 1000};
    pool = sk_redis_pool_create(&loop, &cfg);
    int up = 0;
    for (uint64_t end = sk_now_ms() + 3000; !(up = sk_redis_pool_is_up(pool)) && sk_now_ms() < end;) {
        sk_timer_start(&loop, &tick, 5, on_tick);
        sk_loop_run_once(&loop);
    }
    ok(up, "connected to redis-server on port %s", port);
    if (!up)
        return done();
    snprintf(prefix, sizeof(prefix), "t-unit-optimistic:%d:%llu", (int)getpid(), (unsigned long long)sk_now_ms());
    owner_t a, b;

    /* fn queues nothing: READONLY, the WATCH is dropped by the pool */
    start(&a, "readonly", 3, NULL, fn_readonly, NULL);
    ok(a.tx.state == SK_REDIS_OPTIMISTIC_READING, "WATCH and the reads in flight");
    run_until(&a.dones, 2000);
    ok(a.dones == 1 && a.result == SK_REDIS_OPTIMISTIC_READONLY && a.fns == 1, "read-only: done once, fn ran once");
    finish(&a);

    /* fn queues a write: MULTI/EXEC, EXECUTED with EXEC's replies */
    start(&a, "set", 3, NULL, fn_set, NULL);
    run_until(&a.dones, 2000);
    ok(a.result == SK_REDIS_OPTIMISTIC_EXECUTED && a.tx.exec_reply != NULL && a.tx.exec_reply->type == REDIS_REPLY_ARRAY &&
           a.tx.exec_reply->elements == 1 && strcmp(a.tx.exec_reply->element[0]->str, "OK") == 0,
       "executed: EXEC answered [OK]");
    ok(a.tx.attempt == 1, "in one attempt");
    finish(&a);

    /* a WATCHed key changed: the attempt is retried with fresh reads, fn called again */
    uint64_t conflicts = counter(sk_redis_metrics.tx_conflicts);
    start(&a, "retry", 3, NULL, fn_touch_first, call_then_set);
    run_until(&a.dones, 2000);
    ok(a.result == SK_REDIS_OPTIMISTIC_EXECUTED && a.tx.attempt == 2 && a.fns == 2 && a.calls == 1,
       "a conflict is retried: executed at attempt %u, fn ran %d times", a.tx.attempt, a.fns);
    ok(a.tx.read_replies[0] != NULL && a.tx.read_replies[0]->type == REDIS_REPLY_STRING &&
           strcmp(a.tx.read_replies[0]->str, "1") == 0,
       "the second attempt read afresh");
    ok(counter(sk_redis_metrics.tx_conflicts) == conflicts + 1, "one conflict counted");
    finish(&a);

    /* conflicts on every try: CONFLICT, "conflict" by pointer */
    start(&a, "exhausted", 2, NULL, fn_touch_always, call_then_set);
    run_until(&a.dones, 2000);
    ok(a.result == SK_REDIS_OPTIMISTIC_CONFLICT && a.errstr == sk_redis_err_conflict && a.tx.attempt == 2,
       "tries exhausted: conflict after %u attempts", a.tx.attempt);
    finish(&a);

    /* fn fails: FN_ERROR, the dirty connection is cleaned before it is leased again */
    start(&a, "fails", 1, NULL, fn_fail, NULL);
    run_until(&a.dones, 2000);
    ok(a.result == SK_REDIS_OPTIMISTIC_FN_ERROR && strcmp(a.errmsg, "boom") == 0, "fn's error: %s", a.errmsg);
    finish(&a);
    for (int i = 0; i != 3; ++i) {
        start(&b, "fails", 1, NULL, fn_set, NULL);
        run_until(&b.dones, 2000);
        ok(b.result == SK_REDIS_OPTIMISTIC_EXECUTED, "no WATCH left on a pooled connection (try %d)", i);
        finish(&b);
    }

    /* a malformed write: EXECABORT, not retried */
    start(&a, "malformed", 3, NULL, fn_malformed, NULL);
    run_until(&a.dones, 2000);
    ok(a.result == SK_REDIS_OPTIMISTIC_EXEC_ERROR && strncmp(a.errmsg, "EXECABORT", 9) == 0 && a.tx.attempt == 1, "EXECABORT: %s",
       a.errmsg);
    finish(&a);

    /* the gate: the second transaction on a key waits, holding no connection, and runs after the first */
    start(&a, "gated", 3, "gate-key", fn_set, NULL);
    start(&b, "gated", 3, "gate-key", fn_set, NULL);
    ok(b.tx.state == SK_REDIS_OPTIMISTIC_GATING, "the second waits at the gate");
    run_until(&b.dones, 2000);
    ok(a.dones == 1 && b.dones == 1 && a.result == SK_REDIS_OPTIMISTIC_EXECUTED && b.result == SK_REDIS_OPTIMISTIC_EXECUTED,
       "both executed");
    ok(a.fn_order < b.fn_order && b.tx.attempt == 1, "in order, and the second without a conflict");
    finish(&a);
    finish(&b);
    ok(sk_redis_gate_count() == 0, "the gate is gone");

    /* a full gate queue refuses at once: BUSY inside start */
    size_t queue = sk_redis_optimistic_config.gate_queue;
    sk_redis_optimistic_config.gate_queue = 0;
    start(&a, "busy", 3, "gate-key", fn_set, NULL);
    start(&b, "busy", 3, "gate-key", fn_set, NULL);
    ok(b.dones == 1 && b.result == SK_REDIS_OPTIMISTIC_BUSY && b.errstr == sk_redis_err_busy && b.fns == 0,
       "refused by the gate before anything ran: busy");
    finish(&b);
    run_until(&a.dones, 2000);
    finish(&a);
    sk_redis_optimistic_config.gate_queue = queue;

    /* released while its reads are in flight: no on_done, freed once the replies are in */
    uint64_t errors = counter(sk_redis_metrics.tx_error);
    start(&a, "released", 3, NULL, fn_set, NULL);
    int before = freed;
    sk_redis_optimistic_release(&a.tx);
    ok(freed == before, "not freed while replies are in flight");
    int freed_now = 0;
    for (uint64_t end = sk_now_ms() + 2000; !freed_now && sk_now_ms() < end; freed_now = freed == before + 1) {
        sk_timer_start(&loop, &tick, 1, on_tick);
        sk_loop_run_once(&loop);
    }
    ok(freed_now && a.dones == 0 && a.fns == 0, "freed at the last reply; never done, fn never ran");
    ok(counter(sk_redis_metrics.tx_error) == errors + 1, "counted as an error");

    sk_redis_pool_destroy(pool);
    sk_loop_dispose(&loop);
    return done();
}
