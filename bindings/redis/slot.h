/*
 * slot.h: which Redis Cluster hash slot a command belongs to (the cluster specification's key -> slot mapping).
 *
 * slot = CRC16(tag) mod 16384, CRC16 being CRC-16/XMODEM (polynomial 0x1021, initial value 0) and tag the key's hash
 * tag: the bytes between the first '{' and the first '}' after it, when there are any; otherwise the whole key. So
 * "{user1000}.following" and "{user1000}.followers" share a slot, "foo{}{bar}" hashes whole and "foo{{bar}}zap"
 * hashes "{bar".
 *
 * A command's keys are found with a small table (command name -> where its keys are, like Redis's own command table:
 * first, last, step, or EVAL's numkeys); a command the table does not know is taken to have one key, argv[1]. Pure
 * functions: no I/O, no Lua.
 */
#ifndef SK_REDIS_SLOT_H
#define SK_REDIS_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define SK_REDIS_SLOTS 16384

/** the command has no key: it may go to any node */
#define SK_REDIS_SLOT_NONE (-1)
/** the command's keys are in different slots: it must not be sent */
#define SK_REDIS_SLOT_CROSS (-2)

/** CRC-16/XMODEM of len bytes ("123456789" -> 0x31C3) */
uint16_t sk_redis_slot_crc16(const char *buf, size_t len);
/** the part of the key that is hashed: its hash tag if it has a non-empty one, else the whole key; *taglen is set */
const char *sk_redis_slot_hashtag(const char *key, size_t len, size_t *taglen);
/** the slot of a key, 0..16383 */
int sk_redis_slot_of_key(const char *key, size_t len);

/** the slot of a command (argv[0] is its name, any case): 0..16383, SK_REDIS_SLOT_NONE when it has no key, or
 * SK_REDIS_SLOT_CROSS when its keys hash to different slots */
int sk_redis_slot_of_command(int argc, const char *const *argv, const size_t *lens);
/** folds a command's slot into a running slot (start with SK_REDIS_SLOT_NONE): keyless commands change nothing, two
 * different slots make SK_REDIS_SLOT_CROSS (and it stays so) */
int sk_redis_slot_merge(int acc, int slot);

/** the longest slot token (slot_token), without its NUL */
#define SK_REDIS_SLOT_TOKEN_MAX 4

/** a short string whose slot is `slot` (0..16383): the first of "0".."z", "00".."zz", ... (base 36, digits then lower
 * case letters, shortest first) that hashes there, so every process finds the same token for a slot; at most
 * SK_REDIS_SLOT_TOKEN_MAX characters. A key with the hash tag {token} lives in that slot: an id that starts with the
 * token of its item's slot locates its own keys beside the item's (scripts/common.lua). The table of all 16384 is
 * built once, on first use (about 61,000 CRC16s of 1-4 bytes, a millisecond), thread-safely; the binding builds it
 * at start-up, so no loop thread pays for it. */
const char *sk_redis_slot_token(int slot);

/** the error a cross-slot call raises in Lua */
extern const char sk_redis_slot_err_cross[];

#endif
