#include "core/cluster_addr.h"

#include <string.h>

int cluster_addr_set(struct cluster_addr *a, const char *host, size_t host_len, long long port)
{
    if (port < 1 || port > 65535)
        return -1;
    enum cluster_host kind = CLUSTER_HOST_NAMED;
    if (host == NULL || host_len == 0) {
        kind = CLUSTER_HOST_SAME;
        host_len = 0;
    } else if (host_len == 1 && host[0] == '?') {
        kind = CLUSTER_HOST_UNKNOWN;
        host_len = 0;
    } else if (host_len >= 2 && host[0] == '[' && host[host_len - 1] == ']') {
        host++;
        host_len -= 2;
        if (host_len == 0)
            return -1; /* "[]" names nothing */
    }
    /* A NUL inside would silently shorten the name we later connect to. */
    if (host_len >= CLUSTER_HOST_MAX || (host_len > 0 && memchr(host, '\0', host_len) != NULL))
        return -1;
    a->kind = kind;
    if (host_len > 0)
        memcpy(a->host, host, host_len);
    a->host[host_len] = '\0';
    a->port = (uint16_t)port;
    return 0;
}

bool cluster_addr_equal(const struct cluster_addr *a, const struct cluster_addr *b)
{
    return a->kind == b->kind && a->port == b->port && strcmp(a->host, b->host) == 0;
}
