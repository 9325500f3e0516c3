/*
 * crypto.c: HMAC-SHA-256, a constant-time comparison and random bytes, all OpenSSL's (libcrypto is already in the
 * process for h2o's TLS). Nothing here is hand-rolled: the point is to get the primitives right, not fast.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include "crypto.h"

void sk_crypto_hex(const void *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = bytes;
    for (size_t i = 0; i != n; ++i) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

int sk_crypto_hmac_sha256_hex(const void *key, size_t keylen, const void *msg, size_t msglen,
                              char out[SK_CRYPTO_SHA256_HEX_LEN + 1])
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    /* HMAC() rejects a NULL key even when keylen is 0: an empty key is still a key */
    static const unsigned char empty;
    out[0] = '\0';
    if (HMAC(EVP_sha256(), keylen != 0 ? key : &empty, (int)keylen, msglen != 0 ? msg : &empty, msglen, md, &mdlen) == NULL ||
        mdlen * 2 != SK_CRYPTO_SHA256_HEX_LEN)
        return -1;
    sk_crypto_hex(md, mdlen, out);
    return 0;
}

int sk_crypto_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && CRYPTO_memcmp(a, b, alen) == 0;
}

int sk_crypto_random(void *buf, size_t n)
{
    return RAND_bytes(buf, (int)n) == 1 ? 0 : -1;
}
