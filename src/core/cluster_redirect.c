#include "core/cluster_redirect.h"

#include <stdbool.h>
#include <string.h>

#include "core/cluster_slot.h"

/* Does s (len bytes) start with the error code `word`, followed by the end or a space? */
static bool has_code(const char *s, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len >= n && memcmp(s, word, n) == 0 && (len == n || s[n] == ' ');
}

/* A decimal number of 1..5 digits in [p, p+len), at most max. Returns -1 if not. */
static long parse_small(const char *p, size_t len, long max)
{
    if (len == 0 || len > 5)
        return -1;
    long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v <= max ? v : -1;
}

/* "<slot> <host>:<port>", the rest of a MOVED or ASK. */
static bool parse_target(const char *p, size_t len, struct cluster_redirect *out)
{
    const char *sp = memchr(p, ' ', len);
    if (sp == NULL)
        return false;
    long slot = parse_small(p, (size_t)(sp - p), (long)CLUSTER_SLOTS - 1);
    if (slot < 0)
        return false;
    const char *ep = sp + 1;
    size_t elen = len - (size_t)(ep - p);
    if (memchr(ep, ' ', elen) != NULL)
        return false;
    const char *colon = NULL;
    for (size_t i = elen; i > 0; i--)
        if (ep[i - 1] == ':') {
            colon = ep + i - 1;
            break;
        }
    if (colon == NULL)
        return false;
    long port = parse_small(colon + 1, elen - (size_t)(colon + 1 - ep), 65535);
    if (port < 1)
        return false;
    struct cluster_redirect r = {.slot = (uint16_t)slot};
    /* An empty host stays "" (not NIL): cluster_addr_set maps both to CLUSTER_HOST_SAME. */
    if (cluster_addr_set(&r.to, ep, (size_t)(colon - ep), port) != 0)
        return false;
    *out = r;
    return true;
}

enum cluster_error cluster_error_classify(const char *err, size_t len, struct cluster_redirect *out)
{
    if (err == NULL)
        return CLUSTER_ERR_OTHER;
    if (has_code(err, len, "MOVED"))
        return len > 6 && parse_target(err + 6, len - 6, out) ? CLUSTER_ERR_MOVED : CLUSTER_ERR_OTHER;
    if (has_code(err, len, "ASK"))
        return len > 4 && parse_target(err + 4, len - 4, out) ? CLUSTER_ERR_ASK : CLUSTER_ERR_OTHER;
    if (has_code(err, len, "TRYAGAIN") || has_code(err, len, "CLUSTERDOWN") || has_code(err, len, "LOADING"))
        return CLUSTER_ERR_RETRY;
    return CLUSTER_ERR_OTHER;
}
