/* tests bindings/base/crypto.c: HMAC-SHA-256 against RFC 4231's test vectors, equal, random */
#include <string.h>
#include "../../../../bindings/base/crypto.h"
#include "../../test.h"

static int hmac_is(const void *key, size_t keylen, const void *msg, size_t msglen, const char *expected)
{
    char hex[SK_CRYPTO_SHA256_HEX_LEN + 1];
    return sk_crypto_hmac_sha256_hex(key, keylen, msg, msglen, hex) == 0 && strcmp(hex, expected) == 0;
}

int main(void)
{
    /* RFC 4231 4.2, test case 1: key = 20 bytes of 0x0b, data = "Hi There" */
    unsigned char key1[20];
    memset(key1, 0x0b, sizeof(key1));
    ok(hmac_is(key1, sizeof(key1), "Hi There", 8, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
       "RFC 4231 test case 1");
    /* test case 2: key = "Jefe", data = "what do ya want for nothing?" */
    ok(hmac_is("Jefe", 4, "what do ya want for nothing?", 28, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
       "RFC 4231 test case 2");
    /* test case 3: key = 20 bytes of 0xaa, data = 50 bytes of 0xdd */
    unsigned char key3[20], data3[50];
    memset(key3, 0xaa, sizeof(key3));
    memset(data3, 0xdd, sizeof(data3));
    ok(hmac_is(key3, sizeof(key3), data3, sizeof(data3), "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
       "RFC 4231 test case 3");
    /* test case 6: a key longer than the block (131 bytes of 0xaa) is hashed first */
    unsigned char key6[131];
    memset(key6, 0xaa, sizeof(key6));
    const char *msg6 = "Test Using Larger Than Block-Size Key - Hash Key First";
    ok(hmac_is(key6, sizeof(key6), msg6, strlen(msg6), "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
       "RFC 4231 test case 6");
    /* empty key and message are legal (the well-known HMAC-SHA-256("", "")) */
    ok(hmac_is("", 0, "", 0, "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad"), "empty key and message");

    ok(sk_crypto_equal("abc", 3, "abc", 3), "equal bytes");
    ok(!sk_crypto_equal("abc", 3, "abd", 3), "a differing byte");
    ok(!sk_crypto_equal("abc", 3, "abcd", 4), "different lengths");
    ok(sk_crypto_equal("", 0, "", 0), "two empty strings");

    unsigned char a[32], b[32];
    ok(sk_crypto_random(a, sizeof(a)) == 0 && sk_crypto_random(b, sizeof(b)) == 0 && memcmp(a, b, sizeof(a)) != 0,
       "two random draws differ");
    char hex[5];
    sk_crypto_hex("\x01\xab", 2, hex);
    ok(strcmp(hex, "01ab") == 0, "hex is lowercase, two digits a byte (%s)", hex);
    return done();
}
