/*
 * schema.h: start-up work for the MySQL binding (schema.c): the target from mysql.url, and the schema applied with
 * the blocking API. Main thread (and the retry thread) only, where blocking is fine; no loop, no Lua.
 */
#ifndef SK_MYSQL_SCHEMA_H
#define SK_MYSQL_SCHEMA_H

#include "conn.h"

/* ===== start-up helpers (schema.c): main thread only, blocking allowed ===== */

/** parses mysql://user:pass@host:port/db (user and password may be %-encoded; port defaults to 3306) and resolves
 * host to a numeric address once. Returns 0, or -1 with a message in err. */
int sk_mysql_target_init(sk_mysql_target_t *target, const char *url, uint64_t connect_timeout_ms, uint64_t query_timeout_ms,
                         char *err, size_t errlen);
/** frees what sk_mysql_target_init allocated */
void sk_mysql_target_dispose(sk_mysql_target_t *target);

/** with the blocking API: connects (creating the database if it is missing) and runs the statements of the schema
 * file (separated by a `;` at the end of a line), which are expected to be idempotent (CREATE TABLE IF NOT EXISTS).
 * Returns 0, or -1 with a message in err. */
int sk_mysql_schema_apply(const sk_mysql_target_t *target, const char *path, char *err, size_t errlen);
/** starts a background thread that retries sk_mysql_schema_apply every second until it succeeds, then calls
 * on_applied (from that thread) and exits */
void sk_mysql_schema_retry_start(const sk_mysql_target_t *target, const char *path, void (*on_applied)(void));
/** stops and joins the retry thread, if any (waits at most one connect timeout) */
void sk_mysql_schema_retry_stop(void);

#endif
