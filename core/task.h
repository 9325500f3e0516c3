/*
 * task.h: background tasks declared by app.lua (app.every), run on one loop thread.
 *
 * A task is a name, an interval and a function. The scheduler of a thread (worker 0 of a process serving the API)
 * runs each task's function in a coroutine every interval_ms, the next run scheduled only after the previous one
 * ended, so runs of one task never overlap. Tasks are matched by name across reloads: each run takes the function
 * from the VM installed last, a task the new VM no longer declares stops, a new one starts. An error in a run is
 * logged with its traceback and the task runs again at the next interval. No HTTP knowledge here.
 */
#ifndef SK_TASK_H
#define SK_TASK_H

#include "loop.h"
#include "vm.h"

/** makes vm's tasks the calling thread's tasks, on loop: new names start (first run interval_ms from now), names
 * gone stop (a run in progress finishes), kept names keep their schedule. Retains vm (releasing the previous one). */
void sk_tasks_install(sk_loop_t *loop, sk_vm_t *vm);
/** stops scheduling on the calling thread (shutdown drain); runs in progress finish or are abandoned like any
 * coroutine. Releases the VM. Harmless when nothing was installed. */
void sk_tasks_stop(void);

#endif
