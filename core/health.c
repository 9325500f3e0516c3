/*
 * health.c: the parts behind /healthz. Parts (up/down flags) decide the status code; informational statuses are
 * strings shown beside them, guarded by the same mutex since they are written from loop threads.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "health.h"

#define MAX_PARTS 8
#define MAX_INFOS 4
#define DETAIL_MAX 160

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static struct {
    const char *name;
    _Atomic int up;
} parts[MAX_PARTS];
static size_t nparts;

struct st_sk_health_info_t {
    const char *name;
    char state[24];
    char detail[DETAIL_MAX + 1];
    int has_detail;
};
static sk_health_info_t infos[MAX_INFOS];
static size_t ninfos;

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

sk_health_info_t *sk_health_register_info(const char *name, const char *state)
{
    pthread_mutex_lock(&mutex);
    size_t i;
    for (i = 0; i < ninfos; ++i)
        if (strcmp(infos[i].name, name) == 0)
            break;
    if (i == ninfos && ninfos < MAX_INFOS) {
        infos[i].name = name;
        ++ninfos;
    }
    pthread_mutex_unlock(&mutex);
    sk_health_info_t *info = i < MAX_INFOS ? &infos[i] : NULL;
    sk_health_info_set(info, state, NULL);
    return info;
}

void sk_health_info_set(sk_health_info_t *info, const char *state, const char *detail)
{
    if (info == NULL)
        return;
    pthread_mutex_lock(&mutex);
    snprintf(info->state, sizeof(info->state), "%s", state);
    info->has_detail = detail != NULL;
    if (detail != NULL) {
        size_t n = strcspn(detail, "\n");
        if (n > DETAIL_MAX)
            n = DETAIL_MAX;
        memcpy(info->detail, detail, n);
        info->detail[n] = '\0';
    }
    pthread_mutex_unlock(&mutex);
}

/* appends s as a JSON string body (no quotes); stops before the end of buf rather than split an escape */
static size_t append_escaped(char *buf, size_t len, size_t off, const char *s)
{
    for (; *s != '\0'; ++s) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        size_t n;
        if (c == '"' || c == '\\')
            n = (size_t)snprintf(esc, sizeof(esc), "\\%c", c);
        else if (c < 0x20)
            n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", c);
        else
            esc[0] = (char)c, n = 1;
        if (off + n >= len)
            break;
        memcpy(buf + off, esc, n);
        off += n;
    }
    buf[off] = '\0';
    return off;
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
    pthread_mutex_lock(&mutex);
    for (size_t i = 0; i < ninfos && off + 64 < len; ++i) {
        off += snprintf(buf + off, len - off, ",\"%s\":\"%s\"", infos[i].name, infos[i].state);
        if (infos[i].has_detail && off + 32 < len) {
            off += snprintf(buf + off, len - off, ",\"%s_error\":\"", infos[i].name);
            off = append_escaped(buf, len - 3, off, infos[i].detail); /* room for the closing quote and brace */
            off += snprintf(buf + off, len - off, "\"");
        }
    }
    pthread_mutex_unlock(&mutex);
    if (off < len - 1)
        snprintf(buf + off, len - off, "}");
    return all_up;
}
