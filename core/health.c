#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "health.h"

#define MAX_PARTS 8

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static struct {
    const char *name;
    _Atomic int up;
} parts[MAX_PARTS];
static size_t nparts;

_Atomic int *sk_health_register(const char *name)
{
    pthread_mutex_lock(&mutex);
    size_t i;
    for (i = 0; i < nparts; ++i)
        if (strcmp(parts[i].name, name) == 0)
            break;
    if (i == nparts && nparts < MAX_PARTS) {
        parts[i].name = name;
        ++nparts;
    }
    pthread_mutex_unlock(&mutex);
    return i < MAX_PARTS ? &parts[i].up : NULL;
}

int sk_health_render(char *buf, size_t len)
{
    int all_up = 1;
    size_t off = 0;
    /* first pass decides "ok" so that it can lead the object */
    for (size_t i = 0; i < nparts; ++i)
        all_up &= atomic_load(&parts[i].up) != 0;
    off += snprintf(buf + off, len - off, "{\"ok\":%s", all_up ? "true" : "false");
    for (size_t i = 0; i < nparts && off < len; ++i)
        off += snprintf(buf + off, len - off, ",\"%s\":\"%s\"", parts[i].name, atomic_load(&parts[i].up) ? "up" : "down");
    if (off < len)
        snprintf(buf + off, len - off, "}");
    return all_up;
}
