/*
 * log.h: one line per event on stderr, with a level, a timestamp, the thread's name, the id of the request being
 * served (when there is one) and optional fields; as text (default) or one JSON object per line (log_format "json").
 * The access log (access_log) writes one line per response, to stderr or a file of its own.
 *
 *   text: 2025-01-01T12:00:00.123Z [info] worker-0 req=4f2a9c01d3b8e6a7: [lua] buy.lua:40: taken order_id=o-1 n=2
 *   json: {"time":"2025-01-01T12:00:00.123Z","level":"info","worker":"worker-0","request_id":"4f2a9c01d3b8e6a7",
 *          "msg":"[lua] buy.lua:40: taken","fields":{"order_id":"o-1","n":2}}
 */
#ifndef SK_LOG_H
#define SK_LOG_H

#include <stddef.h>

enum { SK_LOG_DEBUG, SK_LOG_INFO, SK_LOG_WARN, SK_LOG_ERROR };
enum { SK_LOG_TEXT, SK_LOG_JSON };

/** minimum level printed; set from the config/environment at start-up (SECKILLD_LOG_LEVEL) */
extern int sk_log_level;
/** SK_LOG_TEXT or SK_LOG_JSON; set from the config at start-up (log_format) */
extern int sk_log_format;
/** whether the access log is on (sk_log_access_open); read before building an access line */
extern int sk_log_access_on;

/** a field of a log line: key = value. raw: value is a JSON number or boolean (written unquoted) */
typedef struct st_sk_log_field_t {
    const char *key;
    const char *value;
    size_t value_len;
    int raw;
} sk_log_field_t;

/** names the calling thread in every line it logs ("main", "worker-0", "consumer") */
void sk_log_set_thread_name(const char *name);

/** makes id (NUL-terminated, or NULL) the calling thread's current request id, which every line it logs carries;
 * returns the previous one. The coroutine runner sets it around each resume of a request's coroutine. */
const char *sk_log_swap_request_id(const char *id);

/** writes one formatted line atomically (a single write(2)) so threads never interleave */
void sk_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** the same with fields (text: appended as key=value; JSON: the "fields" object) */
void sk_log_fields(int level, const sk_log_field_t *fields, size_t nfields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/** turns the access log on: path NULL writes it to stderr, else appends to that file. Returns 0, or -1 (errno) */
int sk_log_access_open(const char *path);
/** writes one access line (whatever the level) carrying request_id, with msg "access" and the fields */
void sk_log_access(const char *request_id, const sk_log_field_t *fields, size_t nfields);

/** parses "debug", "info", "warn" or "error"; -1 if unknown */
int sk_log_level_from_name(const char *name);

#define sk_debug(...) (sk_log_level <= SK_LOG_DEBUG ? sk_log(SK_LOG_DEBUG, __VA_ARGS__) : (void)0)
#define sk_info(...) sk_log(SK_LOG_INFO, __VA_ARGS__)
#define sk_warn(...) sk_log(SK_LOG_WARN, __VA_ARGS__)
#define sk_error(...) sk_log(SK_LOG_ERROR, __VA_ARGS__)

#endif
