/* tests core/url.c */
#include <string.h>
#include "../../../core/url.h"
#include "../test.h"

static int decodes(const char *in, int plus, const char *expected, size_t expected_len)
{
    char out[256];
    size_t n = sk_url_decode(out, in, strlen(in), plus);
    return n == expected_len && memcmp(out, expected, n) == 0;
}

int main(void)
{
    ok(decodes("abc", 0, "abc", 3), "plain");
    ok(decodes("a%20b", 0, "a b", 3), "escape");
    ok(decodes("%C3%B6", 0, "\xc3\xb6", 2), "utf-8 bytes");
    ok(decodes("a+b", 1, "a b", 3), "plus in query");
    ok(decodes("a+b", 0, "a+b", 3), "plus in path");
    ok(decodes("%zz%4", 0, "%zz%4", 5), "malformed escapes kept");
    ok(decodes("%00x", 0, "\0x", 2), "NUL decoded");
    ok(decodes("%", 0, "%", 1), "lone percent");
    ok(decodes("", 0, "", 0), "empty");
    return done();
}
