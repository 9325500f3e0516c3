/*
 * binding.c: the registry of the plug-in interface (binding.h): runs each binding's hooks in the order of the list the
 * composition root handed over, and tells main about the services, roles and command-line modes they provide.
 */
#include <stdlib.h>
#include <string.h>
#include "binding.h"

/* the list main.c handed over (sk_bindings_use), NULL-terminated */
static const sk_binding_t *const *all;
static size_t nall;

#define FOREACH_BINDING(b)                                                                                                         \
    for (size_t _i = 0; _i < nall; ++_i)                                                                                           \
        for (const sk_binding_t *b = all[_i]; b != NULL; b = NULL)

/* a bound on the bindings one process links (checked in sk_bindings_use) */
#define MAX_BINDINGS 32

void sk_bindings_use(const sk_binding_t *const *list)
{
    all = list;
    for (nall = 0; list[nall] != NULL; ++nall)
        ;
    if (nall > MAX_BINDINGS) {
        fprintf(stderr, "binding.c: %zu bindings, more than MAX_BINDINGS (%d)\n", nall, MAX_BINDINGS);
        abort();
    }
}

const sk_config_key_t *const *sk_bindings_config_keys(void)
{
    static const sk_config_key_t *sets[MAX_BINDINGS + 2];
    size_t n = 0;
    if (sets[0] == NULL) {
        sets[n++] = sk_config_core_keys;
        FOREACH_BINDING(b)
        if (b->config_keys != NULL)
            sets[n++] = b->config_keys;
    }
    return sets;
}

int sk_bindings_init(sk_config_t *cfg, unsigned nthreads)
{
    FOREACH_BINDING(b)
    if (b->init != NULL && b->init(cfg, nthreads) != 0)
        return -1;
    return 0;
}

void sk_bindings_thread_init(sk_loop_t *loop)
{
    FOREACH_BINDING(b)
    if (b->thread_init != NULL)
        b->thread_init(loop);
}

void sk_bindings_open(lua_State *L)
{
    FOREACH_BINDING(b)
    if (b->open != NULL)
        b->open(L);
}

void sk_bindings_thread_dispose(sk_loop_t *loop)
{
    FOREACH_BINDING(b)
    if (b->thread_dispose != NULL)
        b->thread_dispose(loop);
}

void sk_bindings_shutdown(void)
{
    FOREACH_BINDING(b)
    if (b->shutdown != NULL)
        b->shutdown();
}

/* ===== services ===== */

/* the services running, in start order */
static const sk_binding_t *running[MAX_BINDINGS];
static size_t nrunning;

unsigned sk_bindings_services(void)
{
    unsigned n = 0;
    FOREACH_BINDING(b)
    if (b->start != NULL)
        ++n;
    return n;
}

int sk_bindings_has_role(const char *role)
{
    if (strcmp(role, "all") == 0)
        return 1;
    FOREACH_BINDING(b)
    if (b->start != NULL && b->role != NULL && strcmp(b->role, role) == 0)
        return 1;
    return 0;
}

int sk_bindings_start(sk_config_t *cfg, sk_scripts_t *scripts, const char *role, unsigned first_loop_id)
{
    int every = strcmp(role, "all") == 0;
    unsigned loop_id = first_loop_id;
    FOREACH_BINDING(b)
    {
        if (b->start == NULL)
            continue;
        int mine = b->role != NULL && strcmp(b->role, role) == 0;
        if ((every || mine) && b->start(cfg, scripts, loop_id, mine) != 0)
            return -1;
        if (every || mine)
            running[nrunning++] = b;
        ++loop_id; /* a service keeps its loop id whichever others run */
    }
    return 0;
}

void sk_bindings_reload(sk_scripts_t *scripts)
{
    for (size_t i = 0; i != nrunning; ++i)
        if (running[i]->reload != NULL)
            running[i]->reload(scripts);
}

void sk_bindings_stop(void)
{
    while (nrunning != 0) {
        const sk_binding_t *b = running[--nrunning];
        if (b->stop != NULL)
            b->stop();
    }
}

const sk_vm_role_t *sk_bindings_vm_role(size_t i)
{
    FOREACH_BINDING(b)
    if (b->vm_role != NULL && i-- == 0)
        return b->vm_role;
    return NULL;
}

/* ===== command-line modes ===== */

const sk_binding_mode_t *sk_bindings_mode(size_t i)
{
    FOREACH_BINDING(b)
    for (const sk_binding_mode_t *m = b->modes; m != NULL && m->option != NULL; ++m)
        if (i-- == 0)
            return m;
    return NULL;
}

void sk_bindings_usage_roles(FILE *fp, const char *sep)
{
    FOREACH_BINDING(b)
    if (b->start != NULL && b->role != NULL)
        fprintf(fp, "%s%s", sep, b->role);
}

void sk_bindings_usage_synopsis(FILE *fp)
{
    const sk_binding_mode_t *m;
    for (size_t i = 0; (m = sk_bindings_mode(i)) != NULL; ++i)
        fprintf(fp, "       seckilld %s--%s%s%s\n", m->needs_config ? "[-c FILE] " : "", m->option, m->arg != NULL ? " " : "",
                m->arg != NULL ? m->arg : "");
}

/* "text" with each "\n" followed by the option column's indent */
static void print_help(FILE *fp, const char *text)
{
    for (const char *nl; (nl = strchr(text, '\n')) != NULL; text = nl + 1)
        fprintf(fp, "%.*s\n%21s", (int)(nl - text), text, "");
    fprintf(fp, "%s\n", text);
}

void sk_bindings_usage_options(FILE *fp)
{
    FOREACH_BINDING(b)
    if (b->start != NULL && b->role != NULL) {
        fprintf(fp, "%21s%s: ", "", b->role);
        print_help(fp, b->role_help != NULL ? b->role_help : "");
    }
    const sk_binding_mode_t *m;
    for (size_t i = 0; (m = sk_bindings_mode(i)) != NULL; ++i) {
        char opt[64];
        snprintf(opt, sizeof(opt), "--%s%s%s", m->option, m->arg != NULL ? " " : "", m->arg != NULL ? m->arg : "");
        fprintf(fp, "  %-18s ", opt);
        print_help(fp, m->help);
    }
}
