/*
 * crypto.h: the few primitives scripts need to sign and check tokens (crypto.c), on OpenSSL's libcrypto. No Lua
 * knowledge: lua_crypto.c puts `crypto` on top.
 */
#ifndef SK_CRYPTO_H
#define SK_CRYPTO_H

#include <stddef.h>

/** the length of a SHA-256 digest in hex, without the NUL */
#define SK_CRYPTO_SHA256_HEX_LEN 64

/** HMAC-SHA-256 of msg under key, as 64 lowercase hex digits and a NUL in out. Returns 0, or -1 (out then empty). */
int sk_crypto_hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t msglen,
                              char out[SK_CRYPTO_SHA256_HEX_LEN + 1]);
/** 1 when a and b are the same bytes. For equal lengths the time taken does not depend on where they differ (a
 * forged MAC learns nothing from the timing); different lengths are unequal at once (the length is no secret). */
int sk_crypto_equal(const void *a, size_t alen, const void *b, size_t blen);
/** fills buf with n bytes from the CSPRNG. Returns 0, or -1 when it could not. */
int sk_crypto_random(void *buf, size_t n);
/** writes n bytes as 2n lowercase hex digits and a NUL to out */
void sk_crypto_hex(const void *bytes, size_t n, char *out);

#endif
