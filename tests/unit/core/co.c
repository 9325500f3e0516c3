/* tests core/co.c: a coroutine parked on an op (op.h) resumes from the loop with the values its push gives, on_done
 * sees the results or the error, the count of live coroutines, abandoning them at shutdown, the request id each carries,
 * where yielding is refused, the access log's notes, and a returned coroutine's thread reused */
#include "fixture.h"
#include <lauxlib.h>
#include "../../../core/co.h"
#include "../../../core/log.h"
#include "../../../core/op.h"
#include "../../../core/vm.h"
#include "../test.h"

/* h2o 2.2.5 has no way to free an evloop (tests/lsan.supp says the same for the server) */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libh2o-evloop.so\n";
}

/* the coroutines' bodies; park(tag) is the yielding binding below */
static const char co_lua[] = "function echo(tag)\n"
                             "    local n, word = park(tag)\n"
                             "    return n, word, 'after'\n"
                             "end\n"
                             "function must(tag)\n"
                             "    local n, err = park(tag)\n"
                             "    if n == nil then error('park failed: ' .. err) end\n"
                             "    return n\n"
                             "end\n"
                             "function fail()\n"
                             "    error('boom')\n" /* line 11 */
                             "end\n"
                             "function bare_yield()\n"
                             "    coroutine.yield('dropped')\n"
                             "    return 'resumed'\n"
                             "end\n"
                             "function park_in_sort()\n"
                             "    table.sort({2, 1}, function(a, b) park(0) return a < b end)\n"
                             "end\n"
                             "function add(a, b) return a + b end\n"
                             "function closes(n, ...)\n"
                             "    local mark <close> = setmetatable({}, {__close = function() closed = (closed or 0) + n end})\n"
                             "    local deep = 0\n"
                             "    local function down(k) if k == 0 then return 0 end return 1 + down(k - 1) end\n"
                             "    deep = down(n)\n"
                             "    return deep, select('#', ...)\n"
                             "end\n"
                             "return function() end\n";

static const sk_vm_role_t test_role = {.name = "test", .entry = "co.lua"};

static sk_loop_t loop;
static sk_vm_t *vm;
static char *root;

/* ===== a yielding binding, in op.h's shape: park(tag) waits until the test completes its op ===== */

typedef struct st_park_op_t {
    sk_op_t super;
    int tag;
} park_op_t;

static const char test_err_refused[] = "refused";

static park_op_t *parked[8]; /* every op park() parked, in order */
static size_t nparked;
static int cancelled[8], ncancelled, npushed;
static char id_at_park[SK_CO_REQUEST_ID_MAX + 1];

static void on_park_cancel(void *arg)
{
    park_op_t *op = arg;
    cancelled[ncancelled++] = op->tag;
    free(op);
}

static int l_park(lua_State *L)
{
    int tag = (int)luaL_checkinteger(L, 1);
    sk_co_t *co = sk_co_check(L);
    park_op_t *op = calloc(1, sizeof(*op));
    op->super.co = co;
    op->tag = tag;
    parked[nparked++] = op;
    const char *id = sk_log_swap_request_id(NULL);
    sk_log_swap_request_id(id);
    snprintf(id_at_park, sizeof(id_at_park), "%s", id != NULL ? id : "(none)");
    return sk_op_yield(L, &op->super, on_park_cancel);
}

/* the values park() returns: tag * 10 and "word", or nil and the error */
static int push_park(lua_State *L, void *arg)
{
    park_op_t *op = arg;
    ++npushed;
    if (op->super.err == NULL) {
        lua_pushinteger(L, op->tag * 10);
        lua_pushstring(L, "word");
    } else {
        lua_pushnil(L);
        lua_pushstring(L, op->super.err);
    }
    free(op);
    return 2;
}

/* what a library's completion does: store the outcome, wake the coroutine */
static void complete(park_op_t *op, const char *errstr)
{
    op->super.err = errstr;
    sk_op_wake(&op->super, push_park);
}

/* ===== running coroutines ===== */

typedef struct st_outcome_t {
    char name;
    int calls, ok, nres, abandoned;
    char results[512]; /* the results (or the error), space-separated */
    char request_id[SK_CO_REQUEST_ID_MAX + 1];
} outcome_t;

static char done_order[16];
static size_t ndone;

static void on_done(sk_co_t *co, int ok, int nres)
{
    outcome_t *o = co->data;
    ++o->calls;
    o->ok = ok;
    o->nres = nres;
    o->abandoned = co->abandoned;
    o->results[0] = '\0';
    for (int i = -nres; i < 0; ++i) {
        const char *s = luaL_tolstring(co->L, i, NULL);
        size_t len = strlen(o->results);
        snprintf(o->results + len, sizeof(o->results) - len, "%s%s", len != 0 ? " " : "", s);
        lua_pop(co->L, 1);
    }
    const char *id = sk_log_swap_request_id(NULL);
    sk_log_swap_request_id(id);
    snprintf(o->request_id, sizeof(o->request_id), "%s", id != NULL ? id : "(none)");
    if (ndone + 1 < sizeof(done_order))
        done_order[ndone++] = o->name;
}

/* a coroutine running the global fn with one integer argument */
static sk_co_t *new_co(const char *fn, int arg)
{
    sk_co_t *co = sk_co_new(vm, &loop);
    lua_getglobal(co->L, fn);
    lua_pushinteger(co->L, arg);
    return co;
}

static void start(const char *fn, int arg, outcome_t *o)
{
    sk_co_start(new_co(fn, arg), 1, on_done, o);
}

static void on_tick(sk_timer_t *t)
{
    (void)t;
}

/* one iteration that returns even when nothing is pending (an iteration with none would wait for I/O for good) */
static void tick(void)
{
    sk_timer_t t = {0};
    sk_timer_start(&loop, &t, 1, on_tick);
    sk_loop_run_once(&loop);
    sk_timer_stop(&loop, &t);
}

static void reset(void)
{
    nparked = 0;
    ncancelled = npushed = 0;
    ndone = 0;
    memset(done_order, 0, sizeof(done_order));
}

/* ===== the tests ===== */

static void test_park_and_wake(void)
{
    reset();
    outcome_t o = {.name = 'a'};
    start("echo", 7, &o);
    ok(o.calls == 0 && nparked == 1 && parked[0]->super.co != NULL, "park() parks the coroutine");
    ok(sk_co_alive() == 1, "one coroutine alive (%zu)", sk_co_alive());
    ok(vm->refcnt == 2, "it holds a reference on its VM (%zu)", vm->refcnt);
    complete(parked[0], NULL);
    ok(o.calls == 0 && npushed == 0, "the wake does not resume inside the completion");
    sk_loop_run_once(&loop);
    ok(o.calls == 1 && o.ok && o.nres == 3, "it ended, ok, with 3 results (calls %d ok %d nres %d)", o.calls, o.ok, o.nres);
    ok(strcmp(o.results, "70 word after") == 0, "resumed with the values pushed: %s", o.results);
    ok(sk_co_alive() == 0 && vm->refcnt == 1, "released: %zu alive, VM refcnt %zu", sk_co_alive(), vm->refcnt);
}

static void test_errors(void)
{
    reset();
    outcome_t o = {0};
    char want[4200];
    start("fail", 0, &o);
    snprintf(want, sizeof(want), "%s/co.lua:11: boom", root);
    ok(o.calls == 1 && !o.ok && o.nres == 1, "an error ends it at once: !ok, one value (calls %d ok %d)", o.calls, o.ok);
    ok(strncmp(o.results, want, strlen(want)) == 0, "the message with file:line: %s", o.results);
    ok(strstr(o.results, "stack traceback") != NULL, "and a traceback");

    /* the op fails: park() returns nil and the family's error string, and the script raises it */
    outcome_t m = {0};
    start("must", 3, &m);
    complete(parked[0], test_err_refused);
    sk_loop_run_once(&loop);
    ok(m.calls == 1 && !m.ok && strstr(m.results, "park failed: refused") != NULL, "an error after a wake: %s", m.results);
    ok(sk_co_alive() == 0 && vm->refcnt == 1, "both released");
}

static void test_alive(void)
{
    reset();
    outcome_t a = {.name = 'a'}, b = {.name = 'b'};
    start("echo", 1, &a);
    start("echo", 2, &b);
    ok(sk_co_alive() == 2 && vm->refcnt == 3, "two parked: %zu alive", sk_co_alive());
    complete(parked[1], NULL);
    sk_loop_run_once(&loop);
    ok(sk_co_alive() == 1 && b.calls == 1 && a.calls == 0, "the one woken ended, the other waits");
    complete(parked[0], NULL);
    sk_loop_run_once(&loop);
    ok(sk_co_alive() == 0 && strcmp(done_order, "ba") == 0 && strcmp(a.results, "10 word after") == 0,
       "each with its own values: %s / %s", a.results, b.results);
}

/* a coroutine that returned leaves its thread for the next one: the same thread, clean (its to-be-closed variable
 * closed, nothing left on its stack), running another function with its own arguments; one that failed is not kept */
static void test_reuse(void)
{
    reset();
    outcome_t a = {0}, b = {0}, c = {0};
    sk_co_t *co = new_co("closes", 200); /* a deep recursion grows its stack and call frames */
    size_t idle = vm->idle.n;            /* kept by the tests before, less the one it took */
    lua_State *first = co->L;
    sk_co_start(co, 1, on_done, &a);
    ok(a.calls == 1 && a.ok && strcmp(a.results, "200 0") == 0, "the first ran: %s", a.results);
    ok(vm->idle.n == idle + 1, "its thread is kept (%zu kept)", vm->idle.n);
    lua_getglobal(vm->L, "closed");
    ok(lua_tointeger(vm->L, -1) == 200, "its to-be-closed variable was closed once");
    lua_pop(vm->L, 1);

    co = new_co("closes", 3);
    ok(co->L == first && vm->idle.n == idle, "the next coroutine takes that thread");
    ok(lua_gettop(co->L) == 2, "with only its own function and argument on the stack (%d)", lua_gettop(co->L));
    sk_co_start(co, 1, on_done, &b);
    ok(b.calls == 1 && b.ok && strcmp(b.results, "3 0") == 0, "and runs as on a new thread: %s", b.results);
    lua_getglobal(vm->L, "closed");
    ok(lua_tointeger(vm->L, -1) == 203, "closing its own variable, once");
    lua_pop(vm->L, 1);

    co = new_co("fail", 0);
    ok(co->L == first, "the thread is taken again");
    sk_co_start(co, 1, on_done, &c);
    ok(c.calls == 1 && !c.ok && vm->idle.n == idle, "a coroutine that failed leaves no thread to reuse (%zu kept)", vm->idle.n);
    ok(sk_co_alive() == 0 && vm->refcnt == 1, "all released");
}

static void test_yield_and_start_later(void)
{
    reset();
    outcome_t y = {0};
    start("bare_yield", 0, &y);
    ok(y.calls == 0 && sk_co_alive() == 1, "a bare coroutine.yield() does not end the coroutine");
    sk_loop_run_once(&loop);
    ok(y.calls == 1 && y.ok && strcmp(y.results, "resumed") == 0, "it goes on in the next iteration: %s", y.results);

    outcome_t s = {0};
    sk_co_t *co = new_co("add", 2);
    lua_pushinteger(co->L, 3);
    sk_co_start_later(co, 2, on_done, &s);
    ok(s.calls == 0, "sk_co_start_later does not run it inside the caller");
    sk_loop_run_once(&loop);
    ok(s.calls == 1 && s.ok && strcmp(s.results, "5") == 0, "it runs from the loop, with its arguments: %s", s.results);
}

static void test_check(void)
{
    reset();
    /* the VM's main thread is no request coroutine */
    lua_State *L = vm->L;
    ok(sk_co_of(L) == NULL, "sk_co_of: no coroutine on the VM's main thread");
    lua_getglobal(L, "park");
    lua_pushinteger(L, 1);
    ok(lua_pcall(L, 1, 0, 0) != LUA_OK && strstr(lua_tostring(L, -1), "cannot yield here: not in a request") != NULL,
       "park() outside a coroutine raises: %s", lua_tostring(L, -1));
    lua_settop(L, 0);

    outcome_t o = {0};
    start("park_in_sort", 0, &o);
    ok(o.calls == 1 && !o.ok && strstr(o.results, "cannot yield here: inside a C call boundary") != NULL,
       "park() in a table.sort comparator raises: %.80s", o.results);
    ok(nparked == 0 && sk_co_alive() == 0, "nothing parked");

    sk_co_t *co = new_co("echo", 1);
    ok(sk_co_of(co->L) == co, "sk_co_of finds the coroutine of its thread");
    outcome_t e = {0};
    sk_co_start(co, 1, on_done, &e);
    complete(parked[0], NULL);
    sk_loop_run_once(&loop);
}

static void test_request_id(void)
{
    reset();
    outcome_t o = {0};
    sk_co_t *co = new_co("echo", 4);
    snprintf(co->request_id, sizeof(co->request_id), "req-42");
    sk_co_start(co, 1, on_done, &o);
    ok(strcmp(id_at_park, "req-42") == 0, "the request id is current while it runs: %s", id_at_park);
    const char *now = sk_log_swap_request_id(NULL);
    ok(now == NULL, "and no longer once it parked: %s", now != NULL ? now : "");
    complete(parked[0], NULL);
    sk_loop_run_once(&loop);
    ok(strcmp(o.request_id, "req-42") == 0, "current again in on_done after the resume: %s", o.request_id);

    outcome_t n = {0};
    start("add", 1, &n);
    ok(strcmp(n.request_id, "(none)") == 0, "a coroutine with no request id makes none current: %s", n.request_id);
}

static void test_abandon(void)
{
    reset();
    outcome_t a = {.name = 'a'}, b = {.name = 'b'}, c = {.name = 'c'};
    start("echo", 1, &a);       /* parked, not woken */
    start("echo", 2, &b);       /* woken, not yet resumed */
    start("bare_yield", 0, &c); /* yielded bare, resumes next iteration */
    complete(parked[1], NULL);
    ok(sk_co_alive() == 3, "three alive");
    size_t n = sk_co_abandon_all();
    ok(n == 3 && sk_co_alive() == 0, "sk_co_abandon_all ended all three (%zu, %zu alive)", n, sk_co_alive());
    ok(ncancelled == 1 && cancelled[0] == 1, "the parked one had its op cancelled (%d)", ncancelled);
    ok(npushed == 1, "the woken one had its results pushed (and its op freed) instead (%d)", npushed);
    ok(strcmp(done_order, "abc") == 0, "each ended once, oldest first: %s", done_order);
    int all = 1;
    outcome_t *each[] = {&a, &b, &c};
    for (size_t i = 0; i < 3; ++i)
        all &= each[i]->calls == 1 && !each[i]->ok && each[i]->abandoned && each[i]->nres == 1 &&
               strncmp(each[i]->results, "abandoned: ", 11) == 0;
    ok(all, "on_done(!ok, 1) with co->abandoned and the message: %s", a.results);
    ok(vm->refcnt == 1, "their VM references dropped (%zu)", vm->refcnt);
    tick();
    ok(a.calls == 1 && b.calls == 1 && c.calls == 1 && npushed == 1, "nothing of theirs runs afterwards");
    ok(sk_co_abandon_all() == 0, "nothing left to abandon");
}

static void test_notes(void)
{
    char *keys[] = {"item_id", "user"};
    sk_co_notes_t notes = {.keys = keys, .nkeys = 2};
    sk_co_note(&notes, "user", 4, "alice", 5);
    ok(strcmp(notes.values[1], "alice") == 0 && notes.values[0][0] == '\0', "a declared key is set");
    sk_co_note(&notes, "user_idx", 4, "bob", 3);
    ok(strcmp(notes.values[1], "bob") == 0, "the key is key_len bytes, not NUL-terminated");
    sk_co_note(&notes, "item", 4, "x", 1);
    sk_co_note(&notes, "other", 5, "x", 1);
    ok(notes.values[0][0] == '\0' && strcmp(notes.values[1], "bob") == 0, "a prefix of a key, or an unknown key, is ignored");
    char long_value[200];
    memset(long_value, 'v', sizeof(long_value));
    sk_co_note(&notes, "item_id", 7, long_value, sizeof(long_value));
    ok(strlen(notes.values[0]) == SK_CO_NOTE_MAX, "a long value is cut at %d bytes (%zu)", SK_CO_NOTE_MAX, strlen(notes.values[0]));
}

int main(void)
{
    static const char *const files[] = {"co.lua", co_lua, NULL};
    fixture_begin("return {}", NULL);
    root = fixture_scripts(files);
    char err[1024], *read_err = NULL;
    sk_scripts_t *scripts = sk_scripts_read(root, &read_err);
    if (scripts == NULL) {
        printf("not ok: cannot read the scripts: %s\n", read_err);
        return 1;
    }
    static _Atomic size_t mem;
    vm = sk_vm_create(scripts, &test_role, 1, 0, &mem, err, sizeof(err));
    sk_scripts_release(scripts);
    if (vm == NULL) {
        printf("not ok: cannot build the VM: %s\n", err);
        return 1;
    }
    lua_register(vm->L, "park", l_park);
    sk_loop_init(&loop, 0, NULL, NULL);

    test_park_and_wake();
    test_errors();
    test_alive();
    test_reuse();
    test_yield_and_start_later();
    test_check();
    test_request_id();
    test_abandon();
    test_notes();

    sk_vm_release(vm);
    ok(mem == 0, "the VM closed with the last reference (%zu bytes left)", (size_t)mem);
    sk_loop_dispose(&loop);
    fixture_remove(root);
    fixture_end();
    return done();
}
