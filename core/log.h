/*
 * log.h: one line per event on stderr, with a level, a timestamp and the thread's name.
 */
#ifndef SK_LOG_H
#define SK_LOG_H

enum { SK_LOG_DEBUG, SK_LOG_INFO, SK_LOG_WARN, SK_LOG_ERROR };

/** minimum level printed; set from the config/environment at start-up (SECKILLD_LOG_LEVEL) */
extern int sk_log_level;

/** names the calling thread in every line it logs ("main", "worker-0", "consumer") */
void sk_log_set_thread_name(const char *name);

/** writes one formatted line atomically (a single write(2)) so threads never interleave */
void sk_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** parses "debug", "info", "warn" or "error"; -1 if unknown */
int sk_log_level_from_name(const char *name);

#define sk_debug(...) (sk_log_level <= SK_LOG_DEBUG ? sk_log(SK_LOG_DEBUG, __VA_ARGS__) : (void)0)
#define sk_info(...) sk_log(SK_LOG_INFO, __VA_ARGS__)
#define sk_warn(...) sk_log(SK_LOG_WARN, __VA_ARGS__)
#define sk_error(...) sk_log(SK_LOG_ERROR, __VA_ARGS__)

#endif
