/*
 * health.h: what GET /healthz reports. Each backend binding registers a named part and keeps its state current;
 * /healthz answers 200 when every part is up, 503 naming the part that is down.
 *
 * A component may also register an informational status ("consumer": "ok" | "stalled" | ...), shown in the body
 * with an optional detail ("consumer_error"), which never decides the status code: a stalled consumer is a symptom
 * whose cause (a backend down) is a part of its own.
 */
#ifndef SK_HEALTH_H
#define SK_HEALTH_H

#include <stdatomic.h>
#include <stddef.h>

/** registers a part ("redis", "mysql", "kafka") at start-up; returns the flag the binding updates (1 up, 0 down) */
_Atomic int *sk_health_register(const char *name);

/** an informational status shown in /healthz as "<name>": "<state>" (and "<name>_error": "<detail>") */
typedef struct st_sk_health_info_t sk_health_info_t;

/** registers an informational status named `name` (a static string) with its initial state; NULL when the table is
 * full. Any thread. */
sk_health_info_t *sk_health_register_info(const char *name, const char *state);
/** sets the state (a short word, copied) and detail (copied, first line only, shortened; NULL: none). Any thread;
 * harmless on NULL. */
void sk_health_info_set(sk_health_info_t *info, const char *state, const char *detail);

/** renders the JSON body; returns 1 if all parts are up. buf gets at most len bytes, NUL-terminated, and is always
 * valid JSON when len >= 256 (details are shortened to fit). */
int sk_health_render(char *buf, size_t len);

#endif
