#include "shards/resp.h"

#include <stdlib.h>
#include <string.h>

int resp_init(struct resp *r)
{
    r->cap = 4096;
    r->len = 0;
    r->failed = false;
    r->buf = malloc(r->cap);
    return r->buf != NULL ? 0 : -1;
}

void resp_free(struct resp *r)
{
    free(r->buf);
    r->buf = NULL;
}

static bool reserve(struct resp *r, size_t n)
{
    if (r->failed)
        return false;
    if (r->len + n <= r->cap)
        return true;
    size_t cap = r->cap;
    while (cap < r->len + n)
        cap *= 2;
    char *p = realloc(r->buf, cap);
    if (p == NULL) {
        r->failed = true;
        return false;
    }
    r->buf = p;
    r->cap = cap;
    return true;
}

/* Decimal digits of v at p (room for 20), returns the count. Two digits per division: keys
 * and lengths are formatted several times per request. */
static size_t put_ll(char *p, long long v)
{
    static const char pairs[] = "0001020304050607080910111213141516171819202122232425262728293031323334353637383940414243444546474849"
                                "5051525354555657585960616263646566676869707172737475767778798081828384858687888990919293949596979899";
    char tmp[24];
    size_t n = sizeof(tmp);
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    while (u >= 100) {
        unsigned d = (unsigned)(u % 100) * 2;
        u /= 100;
        tmp[--n] = pairs[d + 1];
        tmp[--n] = pairs[d];
    }
    if (u >= 10) {
        tmp[--n] = pairs[u * 2 + 1];
        tmp[--n] = pairs[u * 2];
    } else {
        tmp[--n] = (char)('0' + u);
    }
    size_t len = 0;
    if (v < 0)
        p[len++] = '-';
    memcpy(p + len, tmp + n, sizeof(tmp) - n);
    return len + sizeof(tmp) - n;
}

/* "<c><n>\r\n": an array or bulk-string header. */
static void header(struct resp *r, char c, long long n)
{
    if (!reserve(r, 24))
        return;
    r->buf[r->len++] = c;
    r->len += put_ll(r->buf + r->len, n);
    r->buf[r->len++] = '\r';
    r->buf[r->len++] = '\n';
}

void resp_start(struct resp *r, int argc)
{
    r->len = 0;
    r->failed = false;
    header(r, '*', argc);
}

void resp_arg(struct resp *r, const void *data, size_t len)
{
    header(r, '$', (long long)len);
    if (!reserve(r, len + 2))
        return;
    if (len > 0)
        memcpy(r->buf + r->len, data, len);
    r->len += len;
    r->buf[r->len++] = '\r';
    r->buf[r->len++] = '\n';
}

void resp_arg_id(struct resp *r, const char *prefix, long long n, const char *sep, const void *tail,
                 size_t tlen)
{
    char num[24];
    size_t plen = strlen(prefix), nlen = put_ll(num, n), slen = strlen(sep);
    size_t total = plen + nlen + slen + tlen;
    header(r, '$', (long long)total);
    if (!reserve(r, total + 2))
        return;
    char *p = r->buf + r->len;
    memcpy(p, prefix, plen);
    memcpy(p + plen, num, nlen);
    memcpy(p + plen + nlen, sep, slen);
    if (tlen > 0)
        memcpy(p + plen + nlen + slen, tail, tlen);
    r->len += total;
    r->buf[r->len++] = '\r';
    r->buf[r->len++] = '\n';
}
