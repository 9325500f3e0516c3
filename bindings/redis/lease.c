/* lease.c: the bounded FIFO of lease requests with their timeouts (lease.h) */
#include "lease.h"
#include "metrics.h"

void sk_redis_lease_queue_init(sk_redis_lease_queue_t *queue, sk_loop_t *loop, size_t max, uint64_t wait_ms)
{
    *queue = (sk_redis_lease_queue_t){.loop = loop, .max = max, .wait_ms = wait_ms};
    h2o_linklist_init_anchor(&queue->_waiters);
}

static void unlink_lease(sk_redis_lease_t *lease)
{
    h2o_linklist_unlink(&lease->_link);
    --lease->_queue->count;
    sk_timer_stop(lease->_queue->loop, &lease->_timer);
}

static void on_timeout(sk_timer_t *timer)
{
    sk_redis_lease_t *lease = H2O_STRUCT_FROM_MEMBER(sk_redis_lease_t, _timer, timer);
    unlink_lease(lease);
    sk_counter_inc(sk_redis_metrics.lease_timeouts);
    lease->cb(lease->op, NULL, sk_redis_err_pool_timeout);
}

const char *sk_redis_lease_push(sk_redis_lease_queue_t *queue, sk_redis_lease_t *lease, sk_op_t *op, sk_redis_lease_cb cb)
{
    lease->cb = cb;
    lease->op = op;
    lease->_queue = queue;
    if (queue->count >= queue->max) {
        sk_counter_inc(sk_redis_metrics.lease_rejected);
        return sk_redis_err_pool_busy;
    }
    sk_counter_inc(sk_redis_metrics.lease_waits);
    lease->queued_at = sk_now_ms();
    h2o_linklist_insert(&queue->_waiters, &lease->_link);
    ++queue->count;
    lease->_timer = (sk_timer_t){0};
    sk_timer_start(queue->loop, &lease->_timer, queue->wait_ms, on_timeout);
    return NULL;
}

sk_redis_lease_t *sk_redis_lease_shift(sk_redis_lease_queue_t *queue)
{
    if (h2o_linklist_is_empty(&queue->_waiters))
        return NULL;
    sk_redis_lease_t *lease = H2O_STRUCT_FROM_MEMBER(sk_redis_lease_t, _link, queue->_waiters.next);
    unlink_lease(lease);
    return lease;
}

void sk_redis_lease_cancel(sk_redis_lease_t *lease)
{
    if (lease->_queue == NULL || !h2o_linklist_is_linked(&lease->_link))
        return;
    unlink_lease(lease);
}
