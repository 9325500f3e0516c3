/*
 * harness.h: what the fuzz targets of tests/fuzz share (harness.c): a VM of the real scripts built as `seckilld -t`
 * builds one (the shipped config, no connection to anything), a harness script of tests/fuzz added to its snapshot,
 * and an h2o request made of a fuzzer's bytes without a connection.
 *
 * Each target is one libFuzzer entry point (LLVMFuzzerTestOneInput) in a file of its own; fuzz.cmake builds and
 * registers them, `make fuzz` runs them (README "Fuzzing").
 */
#ifndef SK_FUZZ_HARNESS_H
#define SK_FUZZ_HARNESS_H

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include <lua.h>
#include "../../core/vm.h"

/**
 * The VM of role (SK_VM_ROLE_API: app.lua and its routes; another role: its entry script must return a function,
 * vm->entry_ref), built once per process from the repository's scripts/ with conf/seckilld.conf and a token secret
 * (SECKILLD_TOKEN_SECRET) and a payment secret (SECKILLD_PAYMENT_SECRET). harness, when not NULL, is a Lua file of tests/fuzz (e.g.
 * "buy.lua") added to the snapshot as "fuzz/<harness>", for a role whose entry it is. Logging is silenced to errors. Aborts if the
 * VM cannot be built.
 */
sk_vm_t *fuzz_vm(const sk_vm_role_t *role, const char *harness);

/** calls the function below nargs arguments on L's stack, as lua_pcall does with a traceback; an error is a finding
 * (a harness's assert, or a script raising where it must not): printed, then abort(). Leaves no result. */
void fuzz_call(lua_State *L, int nargs);

/** a request as h2o hands it to seckilld, without a connection (no peer) */
typedef struct st_fuzz_req_t {
    h2o_req_t req;
    h2o_conn_t conn;
} fuzz_req_t;

/** a request with that method, path (with its query string; query_at found as h2o finds it) and body; the strings
 * are not copied and must outlive it */
void fuzz_req_init(fuzz_req_t *r, const char *method, size_t method_len, const char *path, size_t path_len, const char *body,
                   size_t body_len);
/** adds a header (name lower-cased as h2o does; copied into the request's pool) */
void fuzz_req_add_header(fuzz_req_t *r, const char *name, size_t name_len, const char *value, size_t value_len);
void fuzz_req_dispose(fuzz_req_t *r);

/** the next line of [*p, end): its start and length (without the '\n'), *p moved past it; NULL at the end */
const char *fuzz_next_line(const char **p, const char *end, size_t *len);

/** the input as a JSON POST to path through vm's entry: the value of the header `header` (lower case) on the first
 * line (an empty line: no such header), then the body. An input without a first line is skipped. */
void fuzz_post_with_header(sk_vm_t *vm, const char *path, const char *header, const uint8_t *data, size_t size);

#endif
