/*
 * metrics.h: counters, gauges and histograms exposed as Prometheus text (format 0.0.4) on GET /metrics.
 *
 * A series is a metric name plus a label set, created (or found) once, usually at start-up or on the first use of
 * a label set, under a mutex; updating it afterwards is one relaxed atomic add, safe from any thread.
 */
#ifndef SK_METRICS_H
#define SK_METRICS_H

#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>

typedef struct st_sk_counter_t {
    _Atomic uint64_t value;
} sk_counter_t;

#define SK_HISTOGRAM_MAX_BUCKETS 16

typedef struct st_sk_histogram_t {
    const double *bounds; /* upper bounds, ascending; +Inf is implicit */
    size_t nbounds;
    _Atomic uint64_t buckets[SK_HISTOGRAM_MAX_BUCKETS + 1];
    _Atomic uint64_t count;
    _Atomic uint64_t sum_us; /* sum of observations, in micro-units (observe() takes seconds) */
} sk_histogram_t;

/** latency buckets in seconds, 0.5 ms .. 5 s, for every latency histogram */
extern const double sk_metrics_latency_bounds[];
extern const size_t sk_metrics_latency_nbounds;

/** a counter series; labels is the Prometheus label list without braces, e.g. `route="/x",status="200"`, or "" */
sk_counter_t *sk_metrics_counter(const char *name, const char *help, const char *labels);
/** a gauge series set by its owner (stored as a counter whose value is overwritten) */
sk_counter_t *sk_metrics_gauge(const char *name, const char *help, const char *labels);
/** a histogram series with the given bounds (use sk_metrics_latency_bounds for latencies) */
sk_histogram_t *sk_metrics_histogram(const char *name, const char *help, const char *labels, const double *bounds, size_t nbounds);
/** a gauge computed when /metrics is read: fn appends "name{labels} value\n" lines to the buffer */
typedef struct st_sk_metrics_buf_t sk_metrics_buf_t;
void sk_metrics_gauge_fn(const char *name, const char *help, void (*fn)(sk_metrics_buf_t *buf, const char *name));
void sk_metrics_buf_printf(sk_metrics_buf_t *buf, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static inline void sk_counter_add(sk_counter_t *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}
static inline void sk_counter_inc(sk_counter_t *c)
{
    sk_counter_add(c, 1);
}
static inline void sk_gauge_set(sk_counter_t *g, int64_t v)
{
    atomic_store_explicit(&g->value, (uint64_t)v, memory_order_relaxed);
}
static inline void sk_gauge_add(sk_counter_t *g, int64_t d)
{
    atomic_fetch_add_explicit(&g->value, (uint64_t)d, memory_order_relaxed);
}
/** records one observation, in seconds */
void sk_histogram_observe(sk_histogram_t *h, double v);

/** renders every series; returns a malloc'd buffer and its length */
char *sk_metrics_render(size_t *len);

#endif
