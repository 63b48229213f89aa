/* Pure functions: any thread. */
#include "core/session_list.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A decimal field up to the next '|' (no sign, at most 19 digits): 0 and *out, or -1. */
static int take_number(const char **p, const char *end, int64_t *out)
{
    const char *s = *p;
    int64_t v = 0;
    size_t digits = 0;
    while (s < end && *s >= '0' && *s <= '9') {
        if (++digits > 18) /* keeps v * 10 + 9 below INT64_MAX; epochs are ~16 digits */
            return -1;
        v = v * 10 + (*s++ - '0');
    }
    if (digits == 0 || s == end || *s != '|')
        return -1;
    *p = s + 1;
    *out = v;
    return 0;
}

int session_value_parse(const char *value, size_t len, struct session_view *v)
{
    const char *p = value, *end = value + len;
    int64_t epoch, platform, seen;
    if (take_number(&p, end, &epoch) < 0 || take_number(&p, end, &platform) < 0 ||
        take_number(&p, end, &seen) < 0 || platform > 255)
        return -1;
    v->epoch = epoch;
    v->platform = (int32_t)platform;
    v->last_seen_ms = seen;
    v->gateway = p;
    v->gateway_len = (size_t)(end - p);
    return 0;
}

const char *session_check_device(const char *device, size_t len)
{
    if (len > SESSION_DEVICE_MAX)
        return "device_id longer than 64 bytes";
    for (size_t i = 0; i < len; i++) {
        char c = device[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-';
        if (!ok)
            return "device_id must be made of A-Z a-z 0-9 . _ -";
    }
    return NULL;
}

struct pr_sessions *session_list_new(size_t n, size_t string_bytes)
{
    size_t head = sizeof(struct pr_sessions);
    size_t ptrs = n * sizeof(Mpim__Session *);
    size_t items = n * sizeof(Mpim__Session);
    size_t pool = string_bytes + 2 * n; /* two NULs per session */
    char *mem = malloc(head + ptrs + items + pool);
    if (mem == NULL)
        return NULL;
    struct pr_sessions *l = (struct pr_sessions *)mem;
    /* Items first after the header: their alignment is the header's. */
    l->items = (Mpim__Session *)(mem + head);
    l->ptrs = (Mpim__Session **)(mem + head + items);
    l->pool = mem + head + items + ptrs;
    l->n = 0;
    l->pool_used = 0;
    l->wire_bound = 0;
    return l;
}

static char *pool_copy(struct pr_sessions *l, const char *s, size_t len)
{
    char *at = l->pool + l->pool_used;
    memcpy(at, s, len);
    at[len] = '\0';
    l->pool_used += len + 1;
    return at;
}

void session_list_add(struct pr_sessions *l, const struct session_view *v)
{
    Mpim__Session *m = &l->items[l->n];
    mpim__session__init(m);
    m->device_id = pool_copy(l, v->device, v->device_len);
    m->gateway_addr = pool_copy(l, v->gateway, v->gateway_len);
    m->platform = v->platform;
    m->epoch = v->epoch;
    m->last_seen_ms = v->last_seen_ms;
    l->ptrs[l->n++] = m;
    /* tag+len of the Session (1+10), two strings (1+10+len each), three varints (1+10 each). */
    l->wire_bound += 11 + 11 + v->device_len + 11 + v->gateway_len + 33;
}

struct pr_sessions *session_list_clone(const struct pr_sessions *from)
{
    struct pr_sessions *l = session_list_new(from->n, from->pool_used - 2 * from->n);
    if (l == NULL)
        return NULL;
    memcpy(l->pool, from->pool, from->pool_used);
    for (size_t i = 0; i < from->n; i++) {
        l->items[i] = from->items[i];
        l->items[i].device_id = l->pool + (from->items[i].device_id - from->pool);
        l->items[i].gateway_addr = l->pool + (from->items[i].gateway_addr - from->pool);
        l->ptrs[i] = &l->items[i];
    }
    l->n = from->n;
    l->pool_used = from->pool_used;
    l->wire_bound = from->wire_bound;
    return l;
}

void session_list_free(struct pr_sessions *l)
{
    free(l);
}

static int by_epoch_desc(const void *a, const void *b)
{
    int64_t x = ((const struct session_view *)a)->epoch, y = ((const struct session_view *)b)->epoch;
    return x < y ? 1 : x > y ? -1 : 0;
}

void session_views_sort(struct session_view *v, size_t n)
{
    qsort(v, n, sizeof(*v), by_epoch_desc);
}
