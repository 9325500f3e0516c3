/*
 * fixture.h: what the core's tests that build Lua VMs share: a scripts folder written to a temporary directory, the
 * process's config (sk_vm_create gives scripts `config`), and the registry with no binding (the core runs without any).
 */
#ifndef SK_TEST_FIXTURE_H
#define SK_TEST_FIXTURE_H

#define _GNU_SOURCE
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "../../../core/binding.h"
#include "../../../core/config.h"

/** writes text to dir/rel, creating the folders on the way; returns 0 or -1 */
static int fixture_write(const char *dir, const char *rel, const char *text)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    for (char *slash = strchr(path + strlen(dir) + 1, '/'); slash != NULL; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        mkdir(path, 0700);
        *slash = '/';
    }
    FILE *fp = fopen(path, "w");
    if (fp == NULL)
        return -1;
    fputs(text, fp);
    return fclose(fp);
}

/** a new temporary folder holding files: pairs of relative path and text, ended by NULL. Returns the folder, malloc'd */
static char *fixture_scripts(const char *const *files)
{
    char *dir = strdup("/tmp/sk-unit-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        exit(2);
    }
    for (; files != NULL && files[0] != NULL; files += 2) {
        if (fixture_write(dir, files[0], files[1]) != 0) {
            perror(files[0]);
            exit(2);
        }
    }
    return dir;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/** removes the folder fixture_scripts made, and frees its name */
static void fixture_remove(char *dir)
{
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(dir);
}

/** the registry with the bindings given (NULL: none, the core alone), and sk_config set to a config whose file is `text`
 * (the core's keys checked only). Exits on failure: every test after it would fail. */
static void fixture_begin(const char *text, const sk_binding_t *const *bindings)
{
    static const sk_binding_t *const none[] = {NULL};
    sk_bindings_use(bindings != NULL ? bindings : none);
    char path[] = "/tmp/sk-unit-config-XXXXXX", err[1024];
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text)) {
        perror(path);
        exit(2);
    }
    close(fd);
    sk_config = sk_config_load(path, NULL, err, sizeof(err));
    unlink(path); /* the config keeps the file's text (sk_config_push re-runs it in every VM) */
    if (sk_config == NULL) {
        fprintf(stderr, "config: %s\n", err);
        exit(2);
    }
}

static void fixture_end(void)
{
    sk_config_free(sk_config);
    sk_config = NULL;
}

#endif
