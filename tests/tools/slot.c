/*
 * slot.c: the project's own Redis Cluster slot code (bindings/redis/slot.c) for the end-to-end tests, so that
 * tests/e2e/lib.py keeps no second copy of CRC16 or of the slot tokens:
 *
 *     sk_slot slot KEY...            the slot of each key (its hash tag's, if it has one)
 *     sk_slot token KEY...           the slot token of each key's slot (redis.slot_token)
 *     sk_slot token-of-slot SLOT...  the slot token of each slot
 *
 * One answer a line, in order. Exits 2 on a usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../../bindings/redis/slot.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: sk_slot slot|token|token-of-slot ARG...\n");
        return 2;
    }
    for (int i = 2; i < argc; ++i) {
        if (strcmp(argv[1], "slot") == 0) {
            printf("%d\n", sk_redis_slot_of_key(argv[i], strlen(argv[i])));
        } else if (strcmp(argv[1], "token") == 0) {
            printf("%s\n", sk_redis_slot_token(sk_redis_slot_of_key(argv[i], strlen(argv[i]))));
        } else if (strcmp(argv[1], "token-of-slot") == 0) {
            char *end;
            long slot = strtol(argv[i], &end, 10);
            if (*end != '\0' || slot < 0 || slot > 16383) {
                fprintf(stderr, "sk_slot: not a slot: %s\n", argv[i]);
                return 2;
            }
            printf("%s\n", sk_redis_slot_token((int)slot));
        } else {
            fprintf(stderr, "sk_slot: unknown command %s\n", argv[1]);
            return 2;
        }
    }
    return 0;
}
