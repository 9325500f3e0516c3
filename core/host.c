/*
 * host.c: the thread host every loop runs on (host.h): the thread, its loop, the VM hand-over, wake-ups, the drain
 * and the end.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include "binding.h"
#include "co.h"
#include "host.h"
#include "log.h"

static __thread sk_host_t *current_host;

sk_host_t *sk_host_current(void)
{
    return current_host;
}

/* ===== messages from other threads ===== */

enum { MSG_INSTALL_VM, MSG_WAKE, MSG_STOP };

typedef struct st_control_msg_t {
    h2o_multithread_message_t super;
    int type;
    sk_vm_t *vm;
} control_msg_t;

static void begin_drain(sk_host_t *host);

static void on_control(h2o_multithread_receiver_t *receiver, h2o_linklist_t *messages)
{
    sk_host_t *host = H2O_STRUCT_FROM_MEMBER(sk_host_t, _control, receiver);
    int woken = 0;
    while (!h2o_linklist_is_empty(messages)) {
        control_msg_t *msg = H2O_STRUCT_FROM_MEMBER(control_msg_t, super.link, messages->next);
        h2o_linklist_unlink(&msg->super.link);
        switch (msg->type) {
        case MSG_INSTALL_VM: {
            /* new work goes to the new VM; coroutines still running hold references on the old one, which closes when
             * the last of them ends */
            sk_vm_t *old = host->vm;
            host->vm = msg->vm;
            if (old != NULL)
                sk_vm_release(old);
            sk_debug("now serving Lua VM generation %u", host->vm->generation);
            if (host->cb->installed != NULL)
                host->cb->installed(host);
            break;
        }
        case MSG_WAKE:
            woken = 1;
            break;
        case MSG_STOP:
            begin_drain(host);
            break;
        }
        free(msg);
    }
    if (woken && host->cb->woken != NULL)
        host->cb->woken(host);
}

/* 0 when the host has ended: the message was not sent (its VM is the caller's to release) */
static int send_control(sk_host_t *host, int type, sk_vm_t *vm)
{
    pthread_mutex_lock(&host->_control_mutex);
    int state = host->_control_state;
    if (state != SK_HOST_CONTROL_CLOSED) {
        control_msg_t *msg = h2o_mem_alloc(sizeof(*msg));
        *msg = (control_msg_t){.type = type, .vm = vm};
        if (state == SK_HOST_CONTROL_OPEN)
            h2o_multithread_send_message(&host->_control, &msg->super);
        else
            h2o_linklist_insert(&host->_early, &msg->super.link);
    }
    pthread_mutex_unlock(&host->_control_mutex);
    return state != SK_HOST_CONTROL_CLOSED;
}

/* on the host's thread, once its receiver is registered: what was sent before goes to it, in order */
static void open_control(sk_host_t *host)
{
    h2o_multithread_register_receiver(host->loop.queue, &host->_control, on_control);
    pthread_mutex_lock(&host->_control_mutex);
    while (!h2o_linklist_is_empty(&host->_early)) {
        control_msg_t *msg = H2O_STRUCT_FROM_MEMBER(control_msg_t, super.link, host->_early.next);
        h2o_linklist_unlink(&msg->super.link);
        h2o_multithread_send_message(&host->_control, &msg->super);
    }
    host->_control_state = SK_HOST_CONTROL_OPEN;
    pthread_mutex_unlock(&host->_control_mutex);
}

/* on the host's thread, once its loop is over: no sender can reach the receiver after this */
static void close_control(sk_host_t *host)
{
    pthread_mutex_lock(&host->_control_mutex);
    host->_control_state = SK_HOST_CONTROL_CLOSED;
    pthread_mutex_unlock(&host->_control_mutex);
    h2o_linklist_t *pending = &host->_control._messages;
    while (!h2o_linklist_is_empty(pending)) {
        control_msg_t *msg = H2O_STRUCT_FROM_MEMBER(control_msg_t, super.link, pending->next);
        h2o_linklist_unlink(&msg->super.link);
        if (msg->vm != NULL)
            sk_vm_release(msg->vm);
        free(msg);
    }
    h2o_multithread_unregister_receiver(host->loop.queue, &host->_control);
}

/* ===== draining ===== */

static void on_drain_timeout(sk_timer_t *timer)
{
    sk_host_t *host = H2O_STRUCT_FROM_MEMBER(sk_host_t, _drain_timer, timer);
    if (host->cb->timed_out != NULL)
        host->cb->timed_out(host);
    else
        sk_warn("drain timed out with %zu coroutines in flight", sk_co_alive());
}

static void begin_drain(sk_host_t *host)
{
    if (host->draining)
        return;
    host->draining = 1;
    if (host->cb->drain != NULL)
        host->cb->drain(host);
    sk_timer_start(&host->loop, &host->_drain_timer, host->drain_timeout_ms, on_drain_timeout);
}

static int drained(sk_host_t *host)
{
    return host->draining && (host->cb->idle(host) || !sk_timer_is_active(&host->_drain_timer));
}

/* ===== the thread ===== */

static void *run_host(void *arg)
{
    sk_host_t *host = arg;
    current_host = host;
    sk_log_set_thread_name(host->name);
    /* the name top -H, perf and /proc/PID/task/TID/comm show ("sk:worker-0", "sk:consumer"); the kernel keeps 15
     * characters */
    char comm[16];
    snprintf(comm, sizeof(comm), "sk:%.12s", host->name);
    pthread_setname_np(pthread_self(), comm);

    h2o_evloop_t *evloop = h2o_evloop_create();
    h2o_multithread_queue_t *queue = host->cb->attach != NULL ? host->cb->attach(host, evloop) : NULL;
    sk_loop_init(&host->loop, host->id, evloop, queue);
    open_control(host);
    sk_bindings_thread_init(&host->loop);
    if (host->cb->serve != NULL)
        host->cb->serve(host);
    if (host->_barrier != NULL)
        h2o_barrier_wait(host->_barrier);
    if (host->cb->started != NULL)
        host->cb->started(host);

    while (!drained(host)) {
        sk_loop_run_once(&host->loop);
        atomic_store_explicit(&host->coroutines, sk_co_alive(), memory_order_relaxed);
    }
    sk_timer_stop(&host->loop, &host->_drain_timer);
    close_control(host);
    /* The order matters. Coroutines still parked (the drain timed out, or work still runs) are abandoned first: their
     * bindings hand back leased connections, gate slots and queued waits into pools that are still alive. Then the
     * user closes its sources, the VM closes (a __gc may still use a pool), and only then do the pools go. */
    size_t abandoned = sk_co_abandon_all();
    if (abandoned != 0)
        sk_warn("abandoned %zu coroutines that had not ended", abandoned);
    atomic_store_explicit(&host->coroutines, 0, memory_order_relaxed);
    if (host->cb->close != NULL)
        host->cb->close(host);
    if (host->vm != NULL) {
        sk_vm_release(host->vm);
        host->vm = NULL;
    }
    sk_bindings_thread_dispose(&host->loop);
    return NULL;
}

/* ===== the other threads' side ===== */

void sk_host_init(sk_host_t *host, unsigned id, const char *name, const sk_host_callbacks_t *cb, void *data, sk_vm_t *vm,
                  unsigned drain_timeout_ms)
{
    *host = (sk_host_t){.id = id, .cb = cb, .data = data, .vm = vm, .drain_timeout_ms = drain_timeout_ms};
    snprintf(host->name, sizeof(host->name), "%s", name);
    pthread_mutex_init(&host->_control_mutex, NULL);
    h2o_linklist_init_anchor(&host->_early);
}

int sk_host_start(sk_host_t *host, h2o_barrier_t *barrier)
{
    host->_barrier = barrier;
    return pthread_create(&host->_tid, NULL, run_host, host) == 0 ? 0 : -1;
}

void sk_host_install(sk_host_t *host, sk_vm_t *vm)
{
    if (!send_control(host, MSG_INSTALL_VM, vm))
        sk_vm_release(vm);
}

void sk_host_wake(sk_host_t *host)
{
    send_control(host, MSG_WAKE, NULL);
}

void sk_host_stop(sk_host_t *host)
{
    send_control(host, MSG_STOP, NULL);
}

void sk_host_join(sk_host_t *host)
{
    pthread_join(host->_tid, NULL);
}
