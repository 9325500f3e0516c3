/*
 * health.h: what GET /healthz reports. Each backend binding registers a named part and keeps its state current;
 * /healthz answers 200 when every part is up, 503 naming the part that is down.
 */
#ifndef SK_HEALTH_H
#define SK_HEALTH_H

#include <stdatomic.h>
#include <stddef.h>

/** registers a part ("redis", "mysql", "kafka") at start-up; returns the flag the binding updates (1 up, 0 down) */
_Atomic int *sk_health_register(const char *name);
/** renders the JSON body; returns 1 if all parts are up. buf gets at most len bytes, NUL-terminated. */
int sk_health_render(char *buf, size_t len);

#endif
