/*
 * lane.c: the lanes (a chained hash table under striped mutexes, like shared_store.c), their entries' state
 * machine, and the routes that carry results and promotions to the submitters' loops.
 *
 * An entry is shared by two threads: its submitter's (which parks on it, arms its timer, and is the only one to run
 * its completion) and its leader's (which claims it and writes its result). Who frees it follows its state, which
 * changes only under its key's stripe mutex:
 *   QUEUED   in its lane's queue                 -> CLAIMED (claim), LEAD (promoted), freed by its timer ("busy")
 *   CLAIMED  in a leader's batch                 -> DONE (finish), GONE (its submitter gave up)
 *   DONE     its result is on the way to its loop: the receiver there completes and frees it
 *   LEAD     its promotion is on the way: the same
 *   GONE     nobody waits for it: the leader frees it at finish
 * The mutexes guard only lists and states; messages are sent after the stripe is released.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "lane.h"

const char sk_lane_err_busy[] = "busy";
const char sk_lane_err_unavailable[] = "unavailable";
const char sk_lane_err_failed[] = "batch failed";

#define NSTRIPES 64
#define NBUCKETS_PER_STRIPE 64

enum { QUEUED, CLAIMED, DONE, LEAD, GONE };

/* a loop thread's receiver; freed only at shutdown (a leader may still look at `alive` after the thread ended) */
struct route_t {
    h2o_multithread_receiver_t receiver;
    pthread_mutex_t mutex;
    int alive;
    struct route_t *next; /* in `routes` */
};

struct st_sk_lane_t {
    struct st_sk_lane_t *next; /* in its bucket */
    h2o_linklist_t queue;      /* entries QUEUED, FIFO */
    unsigned stripe;
    size_t keylen;
    char key[];
};

struct st_sk_lane_entry_t {
    h2o_multithread_message_t msg; /* while DONE or LEAD: in its route's queue */
    h2o_linklist_t link;           /* while QUEUED: in its lane's queue */
    struct route_t *route;
    sk_loop_t *loop;
    sk_timer_t timer;
    sk_lane_t *lane; /* while QUEUED or CLAIMED, and the lane it leads once LEAD */
    unsigned stripe;
    int state;
    int bounded;   /* the timer was re-armed for bound_ms after a claim */
    int withdrawn; /* its submitter went away while the message was on its way (submitter's thread only) */
    uint64_t bound_ms;
    sk_op_t *op;
    sk_lane_cb cb;
    char *result;
    size_t result_len;
    const char *err;
    size_t len;
    char payload[];
};

static struct {
    pthread_mutex_t mutex;
    sk_lane_t *buckets[NBUCKETS_PER_STRIPE];
} stripes[NSTRIPES];
static pthread_once_t once = PTHREAD_ONCE_INIT;
static _Atomic size_t nlanes;
static __thread struct route_t *thread_route;
static pthread_mutex_t routes_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct route_t *routes;

static void init_stripes(void)
{
    for (size_t i = 0; i < NSTRIPES; ++i)
        pthread_mutex_init(&stripes[i].mutex, NULL);
}

static uint64_t hash(const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < len; ++i)
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    return h;
}

static sk_lane_t **bucket_of(uint64_t h)
{
    return &stripes[h % NSTRIPES].buckets[(h / NSTRIPES) % NBUCKETS_PER_STRIPE];
}

static void free_entry(sk_lane_entry_t *e)
{
    free(e->result);
    free(e);
}

/* ===== passing the lane on ===== */

/* stripe lock held: the first queued entry is promoted (returned, to be sent once the lock is released), or, with
 * nothing queued, the lane is unlinked and freed (NULL) */
static sk_lane_entry_t *pass_on_locked(sk_lane_t *lane)
{
    if (!h2o_linklist_is_empty(&lane->queue)) {
        sk_lane_entry_t *e = H2O_STRUCT_FROM_MEMBER(sk_lane_entry_t, link, lane->queue.next);
        h2o_linklist_unlink(&e->link);
        e->state = LEAD;
        e->lane = lane;
        return e;
    }
    uint64_t h = hash(lane->key, lane->keylen);
    sk_lane_t **slot = bucket_of(h);
    while (*slot != lane)
        slot = &(*slot)->next;
    *slot = lane->next;
    free(lane);
    atomic_fetch_sub(&nlanes, 1);
    return NULL;
}

static void pass_on(sk_lane_t *lane);

/* hands a DONE or LEAD entry to its submitter's loop; one whose thread has ended is settled here (no coroutine of
 * that thread waits any more) */
static void send_entry(sk_lane_entry_t *e)
{
    struct route_t *r = e->route;
    pthread_mutex_lock(&r->mutex);
    int alive = r->alive;
    if (alive)
        h2o_multithread_send_message(&r->receiver, &e->msg);
    pthread_mutex_unlock(&r->mutex);
    if (alive)
        return;
    if (e->state == LEAD)
        pass_on(e->lane);
    free_entry(e);
}

static void pass_on(sk_lane_t *lane)
{
    pthread_mutex_t *m = &stripes[lane->stripe].mutex;
    pthread_mutex_lock(m);
    sk_lane_entry_t *next = pass_on_locked(lane);
    pthread_mutex_unlock(m);
    if (next != NULL)
        send_entry(next);
}

/* ===== the submitter's side ===== */

static void on_timeout(sk_timer_t *timer)
{
    sk_lane_entry_t *e = H2O_STRUCT_FROM_MEMBER(sk_lane_entry_t, timer, timer);
    pthread_mutex_t *m = &stripes[e->stripe].mutex;
    pthread_mutex_lock(m);
    switch (e->state) {
    case QUEUED: /* never taken: it leaves the queue, nothing was done for it */
        h2o_linklist_unlink(&e->link);
        pthread_mutex_unlock(m);
        e->cb(e->op, NULL, sk_lane_err_busy);
        free_entry(e);
        return;
    case CLAIMED:
        if (!e->bounded) { /* its batch is running: give it bound_ms more */
            e->bounded = 1;
            pthread_mutex_unlock(m);
            sk_timer_start(e->loop, &e->timer, e->bound_ms, on_timeout);
            return;
        }
        e->state = GONE; /* the leader frees it when (if ever) it finishes */
        pthread_mutex_unlock(m);
        e->cb(e->op, NULL, sk_lane_err_unavailable);
        return;
    default: /* DONE or LEAD: the message is on its way and completes it */
        pthread_mutex_unlock(m);
        return;
    }
}

static void on_messages(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    (void)receiver;
    while (!h2o_linklist_is_empty(messages)) {
        sk_lane_entry_t *e = H2O_STRUCT_FROM_MEMBER(sk_lane_entry_t, msg.link, messages->next);
        h2o_linklist_unlink(&e->msg.link);
        /* DONE or LEAD: no other thread touches the entry any more */
        sk_timer_stop(e->loop, &e->timer);
        if (e->withdrawn) {
            if (e->state == LEAD)
                pass_on(e->lane);
        } else {
            sk_lane_outcome_t outcome = {
                .lead = e->state == LEAD ? e->lane : NULL, .result = e->result, .len = e->result_len, .err = e->err};
            e->result = NULL; /* the completion owns it */
            e->cb(e->op, &outcome, NULL);
        }
        free_entry(e);
    }
}

void sk_lane_thread_init(sk_loop_t *loop)
{
    pthread_once(&once, init_stripes);
    struct route_t *r = calloc(1, sizeof(*r));
    pthread_mutex_init(&r->mutex, NULL);
    h2o_multithread_register_receiver(loop->queue, &r->receiver, on_messages);
    r->alive = 1;
    pthread_mutex_lock(&routes_mutex);
    r->next = routes;
    routes = r;
    pthread_mutex_unlock(&routes_mutex);
    thread_route = r;
}

void sk_lane_shutdown(void)
{
    pthread_mutex_lock(&routes_mutex);
    while (routes != NULL) {
        struct route_t *r = routes;
        routes = r->next;
        pthread_mutex_destroy(&r->mutex);
        free(r);
    }
    pthread_mutex_unlock(&routes_mutex);
}

void sk_lane_thread_dispose(sk_loop_t *loop)
{
    struct route_t *r = thread_route;
    if (r == NULL)
        return;
    pthread_mutex_lock(&r->mutex);
    r->alive = 0;
    pthread_mutex_unlock(&r->mutex);
    /* what reached the queue before: no coroutine waits for it any more */
    while (!h2o_linklist_is_empty(&r->receiver._messages)) {
        sk_lane_entry_t *e = H2O_STRUCT_FROM_MEMBER(sk_lane_entry_t, msg.link, r->receiver._messages.next);
        h2o_linklist_unlink(&e->msg.link);
        sk_timer_stop(e->loop, &e->timer);
        if (e->state == LEAD)
            pass_on(e->lane);
        free_entry(e);
    }
    h2o_multithread_unregister_receiver(loop->queue, &r->receiver);
    thread_route = NULL;
}

const char *sk_lane_submit(sk_loop_t *loop, const char *key, size_t keylen, const char *payload, size_t len, uint64_t wait_ms,
                           uint64_t bound_ms, sk_op_t *op, sk_lane_cb cb, sk_lane_entry_t **entry, sk_lane_t **lead)
{
    pthread_once(&once, init_stripes);
    uint64_t h = hash(key, keylen);
    unsigned stripe = h % NSTRIPES;
    sk_lane_t **slot = bucket_of(h);
    *entry = NULL;
    *lead = NULL;
    pthread_mutex_lock(&stripes[stripe].mutex);
    sk_lane_t *lane = *slot;
    while (lane != NULL && !(lane->keylen == keylen && memcmp(lane->key, key, keylen) == 0))
        lane = lane->next;
    if (lane == NULL) { /* nothing led for key: the caller leads */
        lane = malloc(sizeof(*lane) + keylen);
        lane->next = *slot;
        h2o_linklist_init_anchor(&lane->queue);
        lane->stripe = stripe;
        lane->keylen = keylen;
        memcpy(lane->key, key, keylen);
        *slot = lane;
        atomic_fetch_add(&nlanes, 1);
        pthread_mutex_unlock(&stripes[stripe].mutex);
        *lead = lane;
        return NULL; /* leads at once: no cb */
    }
    sk_lane_entry_t *e = malloc(sizeof(*e) + len);
    *e = (sk_lane_entry_t){.route = thread_route,
                           .loop = loop,
                           .lane = lane,
                           .stripe = stripe,
                           .state = QUEUED,
                           .bound_ms = bound_ms,
                           .op = op,
                           .cb = cb,
                           .len = len};
    memcpy(e->payload, payload, len);
    h2o_linklist_insert(&lane->queue, &e->link);
    pthread_mutex_unlock(&stripes[stripe].mutex);
    /* a result cannot overtake this: it is completed by a message this thread reads from its loop, later */
    sk_timer_start(loop, &e->timer, wait_ms, on_timeout);
    *entry = e;
    return NULL;
}

void sk_lane_withdraw(sk_lane_entry_t *e)
{
    sk_timer_stop(e->loop, &e->timer);
    pthread_mutex_t *m = &stripes[e->stripe].mutex;
    pthread_mutex_lock(m);
    switch (e->state) {
    case QUEUED:
        h2o_linklist_unlink(&e->link);
        pthread_mutex_unlock(m);
        free_entry(e);
        return;
    case CLAIMED:
        e->state = GONE;
        break;
    default: /* DONE or LEAD: the receiver frees it (and passes a promotion on) */
        e->withdrawn = 1;
        break;
    }
    pthread_mutex_unlock(m);
}

/* ===== the leader's side ===== */

size_t sk_lane_claim(sk_lane_t *lane, sk_lane_batch_t *batch, size_t max)
{
    if (batch->n + max > batch->capacity) {
        batch->capacity = batch->n + max;
        batch->entries = realloc(batch->entries, batch->capacity * sizeof(*batch->entries));
    }
    batch->lane = lane;
    size_t added = 0;
    pthread_mutex_lock(&stripes[lane->stripe].mutex);
    while (added < max && !h2o_linklist_is_empty(&lane->queue)) {
        sk_lane_entry_t *e = H2O_STRUCT_FROM_MEMBER(sk_lane_entry_t, link, lane->queue.next);
        h2o_linklist_unlink(&e->link);
        e->state = CLAIMED;
        batch->entries[batch->n++] = e;
        ++added;
    }
    pthread_mutex_unlock(&stripes[lane->stripe].mutex);
    return added;
}

const char *sk_lane_payload(const sk_lane_batch_t *batch, size_t i, size_t *len)
{
    *len = batch->entries[i]->len;
    return batch->entries[i]->payload;
}

void sk_lane_finish(sk_lane_batch_t *batch, const char *const *results, const size_t *lens, const char *err)
{
    sk_lane_t *lane = batch->lane;
    /* the copies are made before the stripe is taken */
    char **copies = batch->n != 0 ? calloc(batch->n, sizeof(*copies)) : NULL;
    for (size_t i = 0; i != batch->n; ++i) {
        if (results != NULL && results[i] != NULL) {
            copies[i] = malloc(lens[i] + 1);
            memcpy(copies[i], results[i], lens[i]);
            copies[i][lens[i]] = '\0';
        }
    }
    pthread_mutex_t *m = &stripes[lane->stripe].mutex;
    pthread_mutex_lock(m);
    for (size_t i = 0; i != batch->n; ++i) {
        sk_lane_entry_t *e = batch->entries[i];
        if (e->state == GONE) { /* its submitter gave up: nobody else holds it */
            free(copies[i]);
            free_entry(e);
            batch->entries[i] = NULL;
            continue;
        }
        e->state = DONE;
        e->result = copies[i];
        e->result_len = copies[i] != NULL ? lens[i] : 0;
        e->err = copies[i] != NULL ? NULL : err != NULL ? err : sk_lane_err_failed;
    }
    sk_lane_entry_t *next = pass_on_locked(lane);
    pthread_mutex_unlock(m);
    free(copies);
    for (size_t i = 0; i != batch->n; ++i)
        if (batch->entries[i] != NULL)
            send_entry(batch->entries[i]);
    if (next != NULL)
        send_entry(next);
    free(batch->entries);
    *batch = (sk_lane_batch_t){NULL};
}

size_t sk_lane_count(void)
{
    return atomic_load(&nlanes);
}
