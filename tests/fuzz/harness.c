/* harness.c: the fuzz targets' shared parts (harness.h) */
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../bindings/all.h"
#include "../../core/config.h"
#include "../../core/log.h"
#include "../../core/request.h"
#include "harness.h"

#ifndef SK_SOURCE_DIR
#error "fuzz.cmake defines SK_SOURCE_DIR, the repository's root"
#endif

/* libFuzzer sees the C it instruments, not the Lua the scripts run: the interpreter is Debian's. So that it also
 * steers by the scripts' paths, a line hook counts each (previous line, line) pair of the scripts in counters of its
 * own, which libFuzzer reads as it reads its coverage (the __libfuzzer_extra_counters section). */
#define LINE_COUNTERS (1 << 16)
__attribute__((section("__libfuzzer_extra_counters"))) static uint8_t line_counters[LINE_COUNTERS];

static void on_line(lua_State *L, lua_Debug *ar)
{
    static __thread uintptr_t prev;
    if (!lua_getinfo(L, "S", ar))
        return;
    /* the chunk's name is interned once per loaded file: its address stands for the file */
    uintptr_t here = ((uintptr_t)ar->source * 31 + (uintptr_t)ar->currentline) * 0x9e3779b97f4a7c15ULL;
    ++line_counters[((here >> 20) ^ prev) & (LINE_COUNTERS - 1)];
    prev = (here >> 21) & (LINE_COUNTERS - 1);
}

static void add_harness(sk_scripts_t *scripts, const char *harness)
{
    char path[1024];
    size_t len;
    snprintf(path, sizeof(path), "%s/tests/fuzz/%s", SK_SOURCE_DIR, harness);
    char *source = sk_read_file(path, &len);
    if (source == NULL) {
        fprintf(stderr, "fuzz: cannot read %s\n", path);
        abort();
    }
    snprintf(path, sizeof(path), "fuzz/%s", harness);
    scripts->files = h2o_mem_realloc(scripts->files, (scripts->count + 1) * sizeof(*scripts->files));
    scripts->files[scripts->count].path = strdup(path);
    scripts->files[scripts->count].source = source;
    scripts->files[scripts->count].len = len;
    ++scripts->count;
}

sk_vm_t *fuzz_vm(const sk_vm_role_t *role, const char *harness)
{
    char err[16384], *serr = NULL;
    if (sk_config == NULL) {
        sk_bindings_use(sk_bindings_all);
        /* the shipped config, with secrets so that purchase tokens and payment callbacks are checked, not refused as
         * unconfigured (the payment target signs with config.payment_secret) */
        setenv("SECKILLD_TOKEN_SECRET", "fuzz-secret-0123456789abcdef", 1);
        setenv("SECKILLD_PAYMENT_SECRET", "fuzz-payment-secret-0123456789", 1);
        if ((sk_config = sk_config_load(SK_SOURCE_DIR "/conf/seckilld.conf", sk_bindings_config_keys(), err, sizeof(err))) ==
            NULL) {
            fprintf(stderr, "fuzz: %s\n", err);
            abort();
        }
        sk_log_level = SK_LOG_ERROR + 1; /* the scripts' log lines would drown the fuzzer's */
    }
    sk_scripts_t *scripts = sk_scripts_read(SK_SOURCE_DIR "/scripts", &serr);
    if (scripts == NULL) {
        fprintf(stderr, "fuzz: %s\n", serr != NULL ? serr : "cannot read scripts/");
        abort();
    }
    if (harness != NULL)
        add_harness(scripts, harness);
    sk_vm_t *vm = sk_vm_create(scripts, role, 0, 0, NULL, err, sizeof(err));
    sk_scripts_release(scripts); /* the VM holds its own reference */
    if (vm == NULL) {
        fprintf(stderr, "fuzz: cannot build the VM: %s\n", err);
        abort();
    }
    lua_sethook(vm->L, on_line, LUA_MASKLINE, 0); /* coroutines made from it inherit the hook */
    return vm;
}

static int traceback(lua_State *L)
{
    luaL_traceback(L, L, luaL_tolstring(L, 1, NULL), 1);
    return 1;
}

void fuzz_call(lua_State *L, int nargs)
{
    int base = lua_gettop(L) - nargs; /* the function's index */
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    if (lua_pcall(L, nargs, 0, base) != LUA_OK) {
        fprintf(stderr, "fuzz: the harness raised: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, base - 1);
}

void fuzz_req_init(fuzz_req_t *r, const char *method, size_t method_len, const char *path, size_t path_len, const char *body,
                   size_t body_len)
{
    static const h2o_conn_callbacks_t callbacks; /* get_peername NULL: a connection without a peer */
    memset(r, 0, sizeof(*r));
    r->conn.callbacks = &callbacks;
    r->req.conn = &r->conn;
    h2o_mem_init_pool(&r->req.pool);
    r->req.method = h2o_iovec_init(method, method_len);
    r->req.path = h2o_iovec_init(path, path_len);
    const char *q = memchr(path, '?', path_len);
    r->req.query_at = q != NULL ? (size_t)(q - path) : SIZE_MAX;
    r->req.entity = body != NULL ? h2o_iovec_init(body, body_len) : h2o_iovec_init(NULL, 0);
}

void fuzz_req_add_header(fuzz_req_t *r, const char *name, size_t name_len, const char *value, size_t value_len)
{
    char *lower = h2o_mem_alloc_pool(&r->req.pool, name_len + 1);
    for (size_t i = 0; i != name_len; ++i)
        lower[i] = h2o_tolower(name[i]);
    lower[name_len] = '\0';
    char *v = h2o_mem_alloc_pool(&r->req.pool, value_len + 1);
    memcpy(v, value, value_len);
    v[value_len] = '\0';
    h2o_add_header_by_str(&r->req.pool, &r->req.headers, lower, name_len, 1, NULL, v, value_len);
}

void fuzz_req_dispose(fuzz_req_t *r)
{
    h2o_mem_clear_pool(&r->req.pool);
}

const char *fuzz_next_line(const char **p, const char *end, size_t *len)
{
    if (*p >= end)
        return NULL;
    const char *start = *p, *nl = memchr(start, '\n', end - start);
    *len = (size_t)((nl != NULL ? nl : end) - start);
    *p = nl != NULL ? nl + 1 : end;
    return start;
}

void fuzz_post_with_header(sk_vm_t *vm, const char *path, const char *header, const uint8_t *data, size_t size)
{
    const char *p = (const char *)data, *end = p + size, *value;
    size_t value_len;
    if ((value = fuzz_next_line(&p, end, &value_len)) == NULL)
        return;
    fuzz_req_t r;
    fuzz_req_init(&r, "POST", 4, path, strlen(path), p, (size_t)(end - p));
    fuzz_req_add_header(&r, "content-type", 12, "application/json", 16);
    if (value_len != 0)
        fuzz_req_add_header(&r, header, strlen(header), value, value_len);
    sk_route_match_t m = {.nparams = 0};
    lua_State *L = vm->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->entry_ref);
    sk_request_push(L, &r.req, sk_request_id(&r.req), r.req.path.len, &m);
    fuzz_call(L, 1);
    fuzz_req_dispose(&r);
}
