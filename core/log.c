#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "log.h"

int sk_log_level = SK_LOG_INFO;
static __thread const char *thread_name = "main";
static const char *level_names[] = {"debug", "info", "warn", "error"};

void sk_log_set_thread_name(const char *name)
{
    thread_name = name;
}

int sk_log_level_from_name(const char *name)
{
    for (int i = 0; i < 4; ++i)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

void sk_log(int level, const char *fmt, ...)
{
    if (level < sk_log_level)
        return;
    char buf[4096];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] %s: ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], thread_name);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
    va_end(ap);
    size_t len = n + (m < 0 ? 0 : (size_t)m >= sizeof(buf) - n - 1 ? sizeof(buf) - n - 2 : (size_t)m);
    buf[len++] = '\n';
    /* one write(2) per line keeps lines from different threads whole */
    ssize_t r = write(2, buf, len);
    (void)r;
}
