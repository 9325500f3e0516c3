/*
 * test.h: the smallest harness that reads well: ok(cond, name) per assertion, done() prints the closing line
 * "N passed, M failed" and returns the exit code.
 */
#ifndef SK_TEST_H
#define SK_TEST_H

#include <stdio.h>

static int test_passed, test_failed;

#define ok(cond, ...)                                                                                                              \
    do {                                                                                                                           \
        if (cond) {                                                                                                                \
            ++test_passed;                                                                                                         \
        } else {                                                                                                                   \
            ++test_failed;                                                                                                         \
            printf("not ok %s:%d: ", __FILE__, __LINE__);                                                                          \
            printf(__VA_ARGS__);                                                                                                   \
            printf("\n");                                                                                                          \
        }                                                                                                                          \
    } while (0)

static inline int done(void)
{
    printf("%d passed, %d failed\n", test_passed, test_failed);
    return test_failed != 0 || test_passed == 0;
}

#endif
