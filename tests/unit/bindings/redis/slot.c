/* tests bindings/redis/slot.c: CRC16, hash tags and the slot of commands (values the Redis Cluster spec documents,
 * checked against a live cluster's CLUSTER KEYSLOT by tests/e2e/35_redis_cluster.py) */
#include <string.h>
#include "../../../../bindings/redis/slot.h"
#include "../../test.h"

static int slot(const char *key)
{
    return sk_redis_slot_of_key(key, strlen(key));
}

static void check_tag(const char *key, const char *want)
{
    size_t taglen;
    const char *tag = sk_redis_slot_hashtag(key, strlen(key), &taglen);
    ok(taglen == strlen(want) && memcmp(tag, want, taglen) == 0, "hashtag(%s) = %.*s, want %s", key, (int)taglen, tag, want);
}

static int cmd_slot(int argc, const char **argv)
{
    size_t lens[16];
    for (int i = 0; i != argc; ++i)
        lens[i] = strlen(argv[i]);
    return sk_redis_slot_of_command(argc, argv, lens);
}

int main(void)
{
    /* CRC16 / XMODEM: the spec's check value */
    ok(sk_redis_slot_crc16("123456789", 9) == 0x31C3, "crc16(123456789) = %#x", sk_redis_slot_crc16("123456789", 9));
    ok(sk_redis_slot_crc16("", 0) == 0, "crc16 of nothing");

    /* known slots */
    ok(slot("foo") == 12182, "foo -> %d", slot("foo"));
    ok(slot("bar") == 5061, "bar -> %d", slot("bar"));
    ok(slot("hello") == 866, "hello -> %d", slot("hello"));
    ok(slot("123456789") == (0x31C3 & 16383), "123456789 -> %d", slot("123456789"));
    ok(slot("{user1000}.following") == slot("{user1000}.followers"), "same tag, same slot");
    ok(slot("{user1000}.following") == slot("user1000"), "the tag is what is hashed");

    /* hash tags: first '{', then the first '}' after it, non-empty */
    check_tag("foo", "foo");
    check_tag("{}", "{}");
    check_tag("{", "{");
    check_tag("}{", "}{");
    check_tag("foo{}{bar}", "foo{}{bar}");
    check_tag("foo{{bar}}zap", "{bar");
    check_tag("foo{bar}{zap}", "bar");
    check_tag("{user1000}.following", "user1000");
    check_tag("a{b", "a{b");
    check_tag("a}b{c}", "c");
    ok(slot("foo{}{bar}") != slot("bar"), "an empty tag hashes the whole key");

    /* commands */
    const char *get[] = {"GET", "foo"};
    ok(cmd_slot(2, get) == 12182, "GET foo");
    const char *set[] = {"set", "{foo}x", "1"};
    ok(cmd_slot(3, set) == 12182, "set {foo}x (any case; the value is no key)");
    const char *ping[] = {"PING"};
    ok(cmd_slot(1, ping) == SK_REDIS_SLOT_NONE, "PING has no key");
    const char *load[] = {"SCRIPT", "LOAD", "return 1"};
    ok(cmd_slot(3, load) == SK_REDIS_SLOT_NONE, "SCRIPT LOAD has no key");
    const char *mget_same[] = {"MGET", "{u}a", "{u}b", "{u}c"};
    ok(cmd_slot(4, mget_same) == slot("u"), "MGET of one tag");
    const char *mget_cross[] = {"MGET", "foo", "bar"};
    ok(cmd_slot(3, mget_cross) == SK_REDIS_SLOT_CROSS, "MGET foo bar is cross-slot");
    const char *mset[] = {"MSET", "{u}a", "foo", "{u}b", "bar"};
    ok(cmd_slot(5, mset) == slot("u"), "MSET: the values are no keys");
    const char *mset_cross[] = {"MSET", "foo", "1", "bar", "2"};
    ok(cmd_slot(5, mset_cross) == SK_REDIS_SLOT_CROSS, "MSET foo bar is cross-slot");
    const char *eval[] = {"EVALSHA", "abc", "2", "{u}a", "{u}b", "foo", "bar"};
    ok(cmd_slot(7, eval) == slot("u"), "EVALSHA: the keys, not the args");
    const char *eval_cross[] = {"EVAL", "return 1", "2", "foo", "bar"};
    ok(cmd_slot(5, eval_cross) == SK_REDIS_SLOT_CROSS, "EVAL foo bar is cross-slot");
    const char *eval_nokey[] = {"EVAL", "return 1", "0", "foo"};
    ok(cmd_slot(4, eval_nokey) == SK_REDIS_SLOT_NONE, "EVAL without keys");
    const char *eval_short[] = {"EVAL", "return 1", "5", "foo"};
    ok(cmd_slot(4, eval_short) == 12182, "EVAL numkeys beyond argc: the keys there are");
    const char *blpop[] = {"BLPOP", "foo", "0"};
    ok(cmd_slot(3, blpop) == 12182, "BLPOP: the timeout is no key");
    const char *rename_cross[] = {"RENAME", "foo", "bar"};
    ok(cmd_slot(3, rename_cross) == SK_REDIS_SLOT_CROSS, "RENAME foo bar");

    /* merging */
    ok(sk_redis_slot_merge(SK_REDIS_SLOT_NONE, 5) == 5, "none + 5");
    ok(sk_redis_slot_merge(5, SK_REDIS_SLOT_NONE) == 5, "5 + none");
    ok(sk_redis_slot_merge(5, 5) == 5, "5 + 5");
    ok(sk_redis_slot_merge(5, 6) == SK_REDIS_SLOT_CROSS, "5 + 6");
    ok(sk_redis_slot_merge(SK_REDIS_SLOT_CROSS, 5) == SK_REDIS_SLOT_CROSS, "cross stays");

    /* a token per slot: every slot has one, it hashes there, it is short and made of [0-9a-z] */
    int bad = 0, longest = 0;
    for (int s = 0; s != SK_REDIS_SLOTS; ++s) {
        const char *t = sk_redis_slot_token(s);
        size_t n = t != NULL ? strlen(t) : 0;
        if (n == 0 || n > SK_REDIS_SLOT_TOKEN_MAX || strspn(t, "0123456789abcdefghijklmnopqrstuvwxyz") != n || slot(t) != s ||
            strchr(t, '{') != NULL) {
            if (++bad <= 5)
                ok(0, "token of slot %d: '%s'", s, t != NULL ? t : "(null)");
        }
        if ((int)n > longest)
            longest = (int)n;
    }
    ok(bad == 0, "every slot's token hashes to it (%d bad)", bad);
    ok(longest == 4, "tokens are at most 4 characters (longest %d)", longest);
    /* deterministic: the first in base-36 order, shortest first (the same in every process and every release) */
    ok(strcmp(sk_redis_slot_token(0), "1bz") == 0, "token(0) = %s", sk_redis_slot_token(0));
    ok(strcmp(sk_redis_slot_token(16383), "hia") == 0, "token(16383) = %s", sk_redis_slot_token(16383));
    ok(strcmp(sk_redis_slot_token(12182), "foo") == 0, "token(slot of foo) = %s", sk_redis_slot_token(12182));
    ok(strcmp(sk_redis_slot_token(slot("item-1")), "09hg") == 0, "token(slot of item-1) = %s", sk_redis_slot_token(slot("item-1")));
    ok(slot("seckill:{09hg}:order:09hg.x") == slot("seckill:{item-1}:stock"), "an order key beside its item's keys");
    ok(sk_redis_slot_token(-1) == NULL && sk_redis_slot_token(SK_REDIS_SLOTS) == NULL, "no token out of range");
    return done();
}
