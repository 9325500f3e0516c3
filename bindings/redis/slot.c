/* slot.c: key -> hash slot (slot.h): CRC16, hash tags, and where each command keeps its keys */
#include <pthread.h>
#include <string.h>
#include <strings.h>
#include "slot.h"

const char sk_redis_slot_err_cross[] = "CROSSSLOT: keys of this call are in different slots";

/* ===== CRC-16/XMODEM ===== */

uint16_t sk_redis_slot_crc16(const char *buf, size_t len)
{
    /* bitwise rather than a 512-byte table: keys are short, and this is two shifts and a xor per bit */
    uint16_t crc = 0;
    for (size_t i = 0; i != len; ++i) {
        crc ^= (uint16_t)((uint8_t)buf[i] << 8);
        for (int bit = 0; bit != 8; ++bit)
            crc = (crc & 0x8000) != 0 ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

const char *sk_redis_slot_hashtag(const char *key, size_t len, size_t *taglen)
{
    const char *open = memchr(key, '{', len);
    if (open != NULL) {
        const char *start = open + 1, *close = memchr(start, '}', len - (size_t)(start - key));
        if (close != NULL && close != start) {
            *taglen = (size_t)(close - start);
            return start;
        }
    }
    *taglen = len;
    return key;
}

int sk_redis_slot_of_key(const char *key, size_t len)
{
    size_t taglen;
    const char *tag = sk_redis_slot_hashtag(key, len, &taglen);
    return sk_redis_slot_crc16(tag, taglen) & (SK_REDIS_SLOTS - 1);
}

int sk_redis_slot_merge(int acc, int slot)
{
    if (acc == SK_REDIS_SLOT_CROSS || slot == SK_REDIS_SLOT_NONE)
        return acc;
    if (slot == SK_REDIS_SLOT_CROSS || acc == SK_REDIS_SLOT_NONE)
        return slot;
    return acc == slot ? acc : SK_REDIS_SLOT_CROSS;
}

/* ===== a token per slot ===== */

static char tokens[SK_REDIS_SLOTS][SK_REDIS_SLOT_TOKEN_MAX + 1];
static pthread_once_t tokens_once = PTHREAD_ONCE_INIT;

static void tokens_build(void)
{
    static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
    /* the byte-wise CRC table for this one pass (about 61,000 strings until every slot has a token): entry b is the
     * CRC of the single byte b */
    uint16_t table[256];
    for (int b = 0; b != 256; ++b) {
        char c = (char)b;
        table[b] = sk_redis_slot_crc16(&c, 1);
    }
    size_t left = SK_REDIS_SLOTS;
    for (int len = 1; len <= SK_REDIS_SLOT_TOKEN_MAX && left != 0; ++len) {
        size_t count = 1;
        for (int i = 0; i != len; ++i)
            count *= 36;
        for (size_t n = 0; n != count && left != 0; ++n) {
            char s[SK_REDIS_SLOT_TOKEN_MAX + 1];
            size_t v = n;
            for (int i = len - 1; i >= 0; --i, v /= 36)
                s[i] = digits[v % 36];
            s[len] = '\0';
            uint16_t crc = 0;
            for (int i = 0; i != len; ++i)
                crc = (uint16_t)((crc << 8) ^ table[((crc >> 8) ^ (uint8_t)s[i]) & 0xff]);
            int slot = crc & (SK_REDIS_SLOTS - 1);
            if (tokens[slot][0] == '\0') {
                memcpy(tokens[slot], s, (size_t)len + 1);
                --left;
            }
        }
    }
}

const char *sk_redis_slot_token(int slot)
{
    if (slot < 0 || slot >= SK_REDIS_SLOTS)
        return NULL;
    pthread_once(&tokens_once, tokens_build);
    return tokens[slot];
}

/* ===== where a command's keys are ===== */

/* keys are argv[first], argv[first + step], ... up to argv[argc + last] when last < 0, or argv[last]; first == 0: no
 * key; NUMKEYS: argv[2] says how many keys follow it (EVAL), and argv[first] is a key before them when first != 3 */
#define NUMKEYS (-100)
typedef struct st_keyspec_t {
    const char *name;
    int first, last, step;
} keyspec_t;

static const keyspec_t specs[] = {
    /* no key: any node answers */
    {"PING", 0, 0, 0},
    {"ECHO", 0, 0, 0},
    {"INFO", 0, 0, 0},
    {"TIME", 0, 0, 0},
    {"SCRIPT", 0, 0, 0},
    {"CLUSTER", 0, 0, 0},
    {"DBSIZE", 0, 0, 0},
    {"FLUSHALL", 0, 0, 0},
    {"FLUSHDB", 0, 0, 0},
    {"CONFIG", 0, 0, 0},
    {"CLIENT", 0, 0, 0},
    {"COMMAND", 0, 0, 0},
    {"DEBUG", 0, 0, 0},
    {"SLOWLOG", 0, 0, 0},
    {"LATENCY", 0, 0, 0},
    {"ROLE", 0, 0, 0},
    {"LASTSAVE", 0, 0, 0},
    {"RANDOMKEY", 0, 0, 0},
    {"KEYS", 0, 0, 0},
    {"SCAN", 0, 0, 0},
    {"WAIT", 0, 0, 0},
    {"PUBLISH", 0, 0, 0},
    {"FUNCTION", 0, 0, 0},
    {"MULTI", 0, 0, 0},
    {"EXEC", 0, 0, 0},
    {"DISCARD", 0, 0, 0},
    {"UNWATCH", 0, 0, 0},
    {"ASKING", 0, 0, 0},
    {"READONLY", 0, 0, 0},
    {"AUTH", 0, 0, 0},
    {"SELECT", 0, 0, 0},
    {"HELLO", 0, 0, 0},
    /* every argument a key */
    {"DEL", 1, -1, 1},
    {"UNLINK", 1, -1, 1},
    {"EXISTS", 1, -1, 1},
    {"TOUCH", 1, -1, 1},
    {"MGET", 1, -1, 1},
    {"WATCH", 1, -1, 1},
    {"SINTER", 1, -1, 1},
    {"SUNION", 1, -1, 1},
    {"SDIFF", 1, -1, 1},
    {"SINTERSTORE", 1, -1, 1},
    {"SUNIONSTORE", 1, -1, 1},
    {"SDIFFSTORE", 1, -1, 1},
    {"PFCOUNT", 1, -1, 1},
    {"PFMERGE", 1, -1, 1},
    /* keys and values alternate */
    {"MSET", 1, -1, 2},
    {"MSETNX", 1, -1, 2},
    /* two keys */
    {"RENAME", 1, 2, 1},
    {"RENAMENX", 1, 2, 1},
    {"RPOPLPUSH", 1, 2, 1},
    {"LMOVE", 1, 2, 1},
    {"SMOVE", 1, 2, 1},
    {"COPY", 1, 2, 1},
    /* keys, then a timeout */
    {"BLPOP", 1, -2, 1},
    {"BRPOP", 1, -2, 1},
    /* numkeys at argv[2], the keys after it */
    {"EVAL", 3, NUMKEYS, 1},
    {"EVALSHA", 3, NUMKEYS, 1},
    {"EVAL_RO", 3, NUMKEYS, 1},
    {"EVALSHA_RO", 3, NUMKEYS, 1},
    {"FCALL", 3, NUMKEYS, 1},
    {"FCALL_RO", 3, NUMKEYS, 1},
};

static const keyspec_t *find_spec(const char *name, size_t len)
{
    for (size_t i = 0; i != sizeof(specs) / sizeof(specs[0]); ++i)
        if (strlen(specs[i].name) == len && strncasecmp(specs[i].name, name, len) == 0)
            return &specs[i];
    return NULL;
}

int sk_redis_slot_of_command(int argc, const char *const *argv, const size_t *lens)
{
    static const keyspec_t one_key = {NULL, 1, 1, 1};
    if (argc < 1)
        return SK_REDIS_SLOT_NONE;
    const keyspec_t *spec = find_spec(argv[0], lens[0]);
    if (spec == NULL)
        spec = &one_key;
    if (spec->first == 0)
        return SK_REDIS_SLOT_NONE;
    int first = spec->first, last;
    if (spec->last == NUMKEYS) {
        if (argc < 3)
            return SK_REDIS_SLOT_NONE;
        long n = 0;
        for (size_t i = 0; i != lens[2]; ++i) {
            if (argv[2][i] < '0' || argv[2][i] > '9' || n > 100000)
                return SK_REDIS_SLOT_NONE; /* Redis will refuse it: let it say why */
            n = n * 10 + (argv[2][i] - '0');
        }
        last = first + (int)n - 1;
    } else {
        last = spec->last < 0 ? argc + spec->last : spec->last;
    }
    if (last >= argc)
        last = argc - 1;
    int slot = SK_REDIS_SLOT_NONE;
    for (int i = first; i <= last; i += spec->step)
        slot = sk_redis_slot_merge(slot, sk_redis_slot_of_key(argv[i], lens[i]));
    return slot;
}
