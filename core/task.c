/*
 * task.c: the scheduler behind app.every (read task.h first).
 *
 * One list of tasks per thread, kept in step with the VM installed last: a task is a name, an interval, a timer and
 * whether a run of it is alive. The function itself is looked up by name in that VM when a run starts, so a reload
 * changes what the next run does without touching the schedule. A task that is no longer declared while a run of it
 * is alive stays listed, marked removed, until the run ends: if a reload declares it again meanwhile it simply
 * continues, and two runs of one name never overlap.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "co.h"
#include "log.h"
#include "metrics.h"
#include "task.h"

typedef struct st_task_t {
    struct st_task_t *next;
    char *name;
    uint64_t interval_ms;
    sk_timer_t timer;
    int running; /* a run's coroutine is alive */
    int removed; /* not declared any more (or the thread stops): freed when its run ends */
    sk_counter_t *runs_ok, *runs_failed;
} task_t;

static __thread struct {
    sk_loop_t *loop;
    sk_vm_t *vm; /* the VM runs take their functions from; NULL once stopped */
    task_t *tasks;
} sched;

static const sk_vm_task_t *find_decl(sk_vm_t *vm, const char *name)
{
    for (size_t i = 0; vm != NULL && i < vm->ntasks; ++i)
        if (strcmp(vm->tasks[i].name, name) == 0)
            return vm->tasks + i;
    return NULL;
}

static task_t *find_task(const char *name)
{
    for (task_t *t = sched.tasks; t != NULL; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

static void free_task(task_t *t)
{
    for (task_t **p = &sched.tasks; *p != NULL; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    sk_timer_stop(sched.loop, &t->timer);
    free(t->name);
    free(t);
}

static void on_due(sk_timer_t *timer);

static void schedule(task_t *t)
{
    sk_timer_start(sched.loop, &t->timer, t->interval_ms, on_due);
}

static void on_run_done(sk_co_t *co, int ok, int nres)
{
    (void)nres;
    task_t *t = co->data;
    t->running = 0;
    if (co->abandoned) {
        sk_warn("task %s: run abandoned at shutdown", t->name);
    } else if (ok) {
        sk_counter_inc(t->runs_ok);
    } else {
        sk_counter_inc(t->runs_failed);
        sk_error("task %s failed (it runs again in %llu ms): %s", t->name, (unsigned long long)t->interval_ms,
                 lua_tostring(co->L, -1));
    }
    if (t->removed)
        free_task(t);
    else if (!co->abandoned)
        schedule(t); /* the next run counts from the end of this one: runs never overlap */
}

static void on_due(sk_timer_t *timer)
{
    task_t *t = H2O_STRUCT_FROM_MEMBER(task_t, timer, timer);
    const sk_vm_task_t *decl = find_decl(sched.vm, t->name);
    if (decl == NULL || t->running)
        return; /* cannot happen: install keeps the list in step with the VM, and a run reschedules when it ends */
    sk_co_t *co = sk_co_new(sched.vm, sched.loop);
    lua_rawgeti(co->L, LUA_REGISTRYINDEX, decl->ref);
    t->running = 1;
    sk_co_start(co, 0, on_run_done, t);
}

/* the task stops being scheduled; a run in progress finishes, then the task is freed */
static void retire(task_t *t)
{
    sk_timer_stop(sched.loop, &t->timer);
    if (t->running)
        t->removed = 1;
    else
        free_task(t);
}

static task_t *new_task(const sk_vm_task_t *decl)
{
    static const char help[] = "Runs of app.every tasks by task and result";
    char labels[200];
    task_t *t = h2o_mem_alloc(sizeof(*t));
    *t = (task_t){.name = strdup(decl->name), .interval_ms = decl->interval_ms};
    snprintf(labels, sizeof(labels), "task=\"%s\",result=\"ok\"", decl->name);
    t->runs_ok = sk_metrics_counter("seckilld_task_runs_total", help, labels);
    snprintf(labels, sizeof(labels), "task=\"%s\",result=\"error\"", decl->name);
    t->runs_failed = sk_metrics_counter("seckilld_task_runs_total", help, labels);
    t->next = sched.tasks;
    sched.tasks = t;
    return t;
}

void sk_tasks_install(sk_loop_t *loop, sk_vm_t *vm)
{
    sched.loop = loop;
    sk_vm_retain(vm);
    if (sched.vm != NULL)
        sk_vm_release(sched.vm);
    sched.vm = vm;

    for (task_t *t = sched.tasks, *next; t != NULL; t = next) {
        next = t->next;
        const sk_vm_task_t *decl = find_decl(vm, t->name);
        if (decl == NULL) {
            if (!t->removed)
                sk_info("task %s: no longer declared, stopped", t->name);
            retire(t);
        } else if (t->removed || decl->interval_ms != t->interval_ms) {
            /* declared again while its last run ends, or a new interval: the run in progress reschedules itself */
            t->removed = 0;
            t->interval_ms = decl->interval_ms;
            if (!t->running)
                schedule(t);
        }
    }
    for (size_t i = 0; i < vm->ntasks; ++i) {
        if (find_task(vm->tasks[i].name) != NULL)
            continue;
        task_t *t = new_task(vm->tasks + i);
        sk_info("task %s: every %llu ms", t->name, (unsigned long long)t->interval_ms);
        schedule(t);
    }
}

void sk_tasks_stop(void)
{
    for (task_t *t = sched.tasks, *next; t != NULL; t = next) {
        next = t->next;
        retire(t);
    }
    if (sched.vm != NULL)
        sk_vm_release(sched.vm);
    sched.vm = NULL;
}
