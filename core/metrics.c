/*
 * metrics.c: the registry behind /metrics. Families and series are created under one mutex and never freed
 * (the set is small and bounded by routes x statuses); values are atomics updated lock-free.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <h2o/memory.h>
#include "metrics.h"

const double sk_metrics_latency_bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
const size_t sk_metrics_latency_nbounds = sizeof(sk_metrics_latency_bounds) / sizeof(sk_metrics_latency_bounds[0]);

enum { COUNTER, GAUGE, HISTOGRAM, GAUGE_FN };
static const char *type_names[] = {"counter", "gauge", "histogram", "gauge"};

typedef struct st_series_t {
    char *labels;
    void *value; /* sk_counter_t or sk_histogram_t */
    struct st_series_t *next;
} series_t;

typedef struct st_family_t {
    char *name, *help;
    int type;
    void (*fn)(sk_metrics_buf_t *, const char *);
    series_t *series, **tail;
    struct st_family_t *next;
} family_t;

struct st_sk_metrics_buf_t {
    char *base;
    size_t len, cap;
};

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static family_t *families, **families_tail = &families;

static family_t *get_family(const char *name, const char *help, int type)
{
    family_t *f;
    for (f = families; f != NULL; f = f->next)
        if (strcmp(f->name, name) == 0)
            return f;
    f = h2o_mem_alloc(sizeof(*f));
    *f = (family_t){.name = strdup(name), .help = strdup(help), .type = type};
    f->tail = &f->series;
    *families_tail = f;
    families_tail = &f->next;
    return f;
}

static void *get_series(const char *name, const char *help, int type, const char *labels, size_t size)
{
    pthread_mutex_lock(&mutex);
    family_t *f = get_family(name, help, type);
    series_t *s;
    for (s = f->series; s != NULL; s = s->next)
        if (strcmp(s->labels, labels) == 0)
            break;
    if (s == NULL) {
        s = h2o_mem_alloc(sizeof(*s));
        *s = (series_t){.labels = strdup(labels), .value = calloc(1, size)};
        *f->tail = s;
        f->tail = &s->next;
    }
    pthread_mutex_unlock(&mutex);
    return s->value;
}

sk_counter_t *sk_metrics_counter(const char *name, const char *help, const char *labels)
{
    return get_series(name, help, COUNTER, labels, sizeof(sk_counter_t));
}

sk_counter_t *sk_metrics_gauge(const char *name, const char *help, const char *labels)
{
    return get_series(name, help, GAUGE, labels, sizeof(sk_counter_t));
}

sk_histogram_t *sk_metrics_histogram(const char *name, const char *help, const char *labels, const double *bounds, size_t nbounds)
{
    sk_histogram_t *h = get_series(name, help, HISTOGRAM, labels, sizeof(sk_histogram_t));
    if (nbounds > SK_HISTOGRAM_MAX_BUCKETS)
        nbounds = SK_HISTOGRAM_MAX_BUCKETS;
    /* idempotent: a series found again gets the same bounds */
    h->bounds = bounds;
    h->nbounds = nbounds;
    return h;
}

void sk_metrics_gauge_fn(const char *name, const char *help, void (*fn)(sk_metrics_buf_t *buf, const char *name))
{
    pthread_mutex_lock(&mutex);
    get_family(name, help, GAUGE_FN)->fn = fn;
    pthread_mutex_unlock(&mutex);
}

void sk_histogram_observe(sk_histogram_t *h, double v)
{
    size_t i = 0;
    while (i < h->nbounds && v > h->bounds[i])
        ++i;
    atomic_fetch_add_explicit(&h->buckets[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, (uint64_t)(v * 1e6), memory_order_relaxed);
}

void sk_metrics_buf_printf(sk_metrics_buf_t *buf, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf->base + buf->len, buf->cap - buf->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < buf->cap - buf->len) {
            buf->len += n;
            return;
        }
        buf->cap = buf->cap * 2 + (n > 0 ? n : 0);
        buf->base = h2o_mem_realloc(buf->base, buf->cap);
    }
}

static void render_labels(sk_metrics_buf_t *buf, const char *labels, const char *extra)
{
    if (*labels == '\0' && extra == NULL)
        return;
    sk_metrics_buf_printf(buf, "{%s%s%s}", labels, *labels && extra ? "," : "", extra ? extra : "");
}

char *sk_metrics_render(size_t *len)
{
    sk_metrics_buf_t buf = {.base = h2o_mem_alloc(8192), .cap = 8192};
    pthread_mutex_lock(&mutex);
    for (family_t *f = families; f != NULL; f = f->next) {
        sk_metrics_buf_printf(&buf, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name, type_names[f->type]);
        if (f->type == GAUGE_FN) {
            f->fn(&buf, f->name);
            continue;
        }
        for (series_t *s = f->series; s != NULL; s = s->next) {
            if (f->type == HISTOGRAM) {
                sk_histogram_t *h = s->value;
                uint64_t cum = 0;
                char le[64];
                for (size_t i = 0; i <= h->nbounds; ++i) {
                    cum += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
                    if (i < h->nbounds)
                        snprintf(le, sizeof(le), "le=\"%g\"", h->bounds[i]);
                    else
                        snprintf(le, sizeof(le), "le=\"+Inf\"");
                    sk_metrics_buf_printf(&buf, "%s_bucket", f->name);
                    render_labels(&buf, s->labels, le);
                    sk_metrics_buf_printf(&buf, " %llu\n", (unsigned long long)cum);
                }
                sk_metrics_buf_printf(&buf, "%s_sum", f->name);
                render_labels(&buf, s->labels, NULL);
                sk_metrics_buf_printf(&buf, " %.6f\n", atomic_load_explicit(&h->sum_us, memory_order_relaxed) / 1e6);
                sk_metrics_buf_printf(&buf, "%s_count", f->name);
                render_labels(&buf, s->labels, NULL);
                sk_metrics_buf_printf(&buf, " %llu\n", (unsigned long long)atomic_load_explicit(&h->count, memory_order_relaxed));
            } else {
                sk_counter_t *c = s->value;
                uint64_t v = atomic_load_explicit(&c->value, memory_order_relaxed);
                sk_metrics_buf_printf(&buf, "%s", f->name);
                render_labels(&buf, s->labels, NULL);
                if (f->type == GAUGE)
                    sk_metrics_buf_printf(&buf, " %lld\n", (long long)(int64_t)v);
                else
                    sk_metrics_buf_printf(&buf, " %llu\n", (unsigned long long)v);
            }
        }
    }
    pthread_mutex_unlock(&mutex);
    *len = buf.len;
    return buf.base;
}
