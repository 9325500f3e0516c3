/*
 * log.c: the log line, text or JSON, built in a stack buffer and written with one write(2).
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "log.h"

int sk_log_level = SK_LOG_INFO;
int sk_log_format = SK_LOG_TEXT;
int sk_log_access_on;
static int access_fd = 2;
static __thread const char *thread_name = "main";
static __thread const char *request_id;
static const char *level_names[] = {"debug", "info", "warn", "error"};

void sk_log_set_thread_name(const char *name)
{
    thread_name = name;
}

const char *sk_log_swap_request_id(const char *id)
{
    const char *prev = request_id;
    request_id = id;
    return prev;
}

int sk_log_level_from_name(const char *name)
{
    for (int i = 0; i < 4; ++i)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

/* ===== the line buffer: appends truncate silently, one byte is kept for the newline ===== */

typedef struct st_line_t {
    char buf[4096];
    size_t len;
} line_t;

static void put(line_t *l, const char *s, size_t n)
{
    size_t room = sizeof(l->buf) - 1 - l->len;
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(line_t *l, const char *s)
{
    put(l, s, strlen(s));
}

/* s as the inside of a JSON string */
static void put_json(line_t *l, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; ++i) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(l, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(l, e, 6);
        } else {
            put(l, (const char *)&c, 1);
        }
    }
}

/* a text field's value: bare when it is one plain word, else quoted with JSON escapes (logfmt) */
static void put_text_value(line_t *l, const char *s, size_t n)
{
    int plain = n != 0;
    for (size_t i = 0; i < n && plain; ++i)
        plain = (unsigned char)s[i] > ' ' && s[i] != '"' && s[i] != '=' && s[i] != '\\' && (unsigned char)s[i] != 0x7f;
    if (plain) {
        put(l, s, n);
    } else {
        put(l, "\"", 1);
        put_json(l, s, n);
        put(l, "\"", 1);
    }
}

static void format_line(line_t *l, const char *level, const char *rid, const sk_log_field_t *fields, size_t nfields,
                        const char *fmt, va_list ap)
{
    char ts[96], msg[3072];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, now.tv_nsec / 1000000);
    int m = vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t msglen = m < 0 ? 0 : (size_t)m >= sizeof(msg) ? sizeof(msg) - 1 : (size_t)m;
    l->len = 0;
    if (sk_log_format == SK_LOG_JSON) {
        puts_(l, "{\"time\":\"");
        puts_(l, ts);
        puts_(l, "\",\"level\":\"");
        puts_(l, level);
        puts_(l, "\",\"worker\":\"");
        put_json(l, thread_name, strlen(thread_name));
        if (rid != NULL) {
            puts_(l, "\",\"request_id\":\"");
            put_json(l, rid, strlen(rid));
        }
        puts_(l, "\",\"msg\":\"");
        put_json(l, msg, msglen);
        put(l, "\"", 1);
        if (nfields != 0) {
            puts_(l, ",\"fields\":{");
            for (size_t i = 0; i < nfields; ++i) {
                puts_(l, i ? ",\"" : "\"");
                put_json(l, fields[i].key, strlen(fields[i].key));
                puts_(l, "\":");
                if (!fields[i].raw)
                    put(l, "\"", 1);
                put_json(l, fields[i].value, fields[i].value_len);
                if (!fields[i].raw)
                    put(l, "\"", 1);
            }
            put(l, "}", 1);
        }
        /* a truncated line must still parse: close it whatever was cut */
        if (l->len >= sizeof(l->buf) - 1) {
            static const char tail[] = "\",\"truncated\":true}";
            l->len = sizeof(l->buf) - 1 - (sizeof(tail) - 1) - 8;
            while (l->len > 0 && ((unsigned char)l->buf[l->len] & 0xc0) == 0x80)
                --l->len;                                    /* not inside a UTF-8 sequence */
            while (l->len > 0 && l->buf[l->len - 1] == '\\') /* not inside an escape */
                --l->len;
            put(l, tail, sizeof(tail) - 1);
        } else {
            put(l, "}", 1);
        }
    } else {
        puts_(l, ts);
        puts_(l, " [");
        puts_(l, level);
        puts_(l, "] ");
        puts_(l, thread_name);
        if (rid != NULL) {
            puts_(l, " req=");
            puts_(l, rid);
        }
        puts_(l, ": ");
        put(l, msg, msglen);
        for (size_t i = 0; i < nfields; ++i) {
            put(l, " ", 1);
            puts_(l, fields[i].key);
            put(l, "=", 1);
            put_text_value(l, fields[i].value, fields[i].value_len);
        }
    }
    l->buf[l->len++] = '\n';
}

static void vlog(int level, const sk_log_field_t *fields, size_t nfields, const char *fmt, va_list ap)
{
    line_t l;
    format_line(&l, level_names[level], request_id, fields, nfields, fmt, ap);
    /* one write(2) per line keeps lines from different threads whole */
    ssize_t r = write(2, l.buf, l.len);
    (void)r;
}

void sk_log(int level, const char *fmt, ...)
{
    if (level < sk_log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, NULL, 0, fmt, ap);
    va_end(ap);
}

void sk_log_fields(int level, const sk_log_field_t *fields, size_t nfields, const char *fmt, ...)
{
    if (level < sk_log_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, fields, nfields, fmt, ap);
    va_end(ap);
}

/* ===== the access log ===== */

int sk_log_access_open(const char *path)
{
    if (path != NULL) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return -1;
        access_fd = fd;
    }
    sk_log_access_on = 1;
    return 0;
}

static void access_line(line_t *l, const char *rid, const sk_log_field_t *fields, size_t nfields, ...)
{
    va_list ap;
    va_start(ap, nfields);
    format_line(l, "access", rid, fields, nfields, "access", ap);
    va_end(ap);
}

void sk_log_access(const char *rid, const sk_log_field_t *fields, size_t nfields)
{
    line_t l;
    access_line(&l, rid, fields, nfields);
    ssize_t r = write(access_fd, l.buf, l.len);
    (void)r;
}
