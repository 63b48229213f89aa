/* Pure code with a single owner: the shard thread that created the table (near_cache.h). */
#include "core/near_cache.h"

#include <stdlib.h>
#include <string.h>

struct near_cache {
    struct nc_entry *e;   /* capacity entries; [0, used) have been handed out at least once */
    uint32_t capacity;
    uint32_t used;        /* high-water mark: entries beyond it were never used (calloc'd zero) */
    uint32_t free_head;   /* free list through `next` (index + 1; 0: empty) */
    uint32_t count;       /* entries in the table */
    uint32_t hand;        /* CLOCK hand */
    uint32_t *bucket;     /* hash heads (index + 1; 0: empty), nbuckets = 2^bits */
    uint32_t bits;
    uint32_t generation;  /* bumped by clear: tokens of older fetches never match again */
    uint32_t seq;         /* fetches begun in this generation */
};

static uint32_t bucket_of(const struct near_cache *nc, int64_t uid)
{
    return (uint32_t)(((uint64_t)uid * 0x9E3779B97F4A7C15ull) >> (64 - nc->bits));
}

struct near_cache *near_cache_new(uint32_t capacity)
{
    if (capacity == 0 || capacity > NEAR_CACHE_MAX)
        return NULL;
    struct near_cache *nc = calloc(1, sizeof(*nc));
    if (nc == NULL)
        return NULL;
    nc->capacity = capacity;
    nc->bits = 4;
    while ((1u << nc->bits) < capacity)
        nc->bits++;
    /* calloc: the pages of entries never used are never touched. */
    nc->e = calloc(capacity, sizeof(*nc->e));
    nc->bucket = calloc((size_t)1 << nc->bits, sizeof(*nc->bucket));
    if (nc->e == NULL || nc->bucket == NULL) {
        near_cache_free(nc);
        return NULL;
    }
    return nc;
}

static void release(struct nc_entry *x)
{
    if (x->has_route && x->route_len > NC_ROUTE_INLINE)
        free(x->route.heap);
    session_list_free(x->sessions);
    x->sessions = NULL;
    x->has_route = false;
    x->route_len = 0;
}

void near_cache_free(struct near_cache *nc)
{
    if (nc == NULL)
        return;
    if (nc->e != NULL)
        for (uint32_t i = 0; i < nc->used; i++)
            if (nc->e[i].state != NC_FREE)
                release(&nc->e[i]);
    free(nc->e);
    free(nc->bucket);
    free(nc);
}

/* The index of uid's entry, or -1. *prev: the chain link that points at it. */
static int64_t find(struct near_cache *nc, int64_t uid, uint32_t **prev)
{
    uint32_t *link = &nc->bucket[bucket_of(nc, uid)];
    while (*link != 0) {
        struct nc_entry *x = &nc->e[*link - 1];
        if (x->uid == uid) {
            if (prev != NULL)
                *prev = link;
            return *link - 1;
        }
        link = &x->next;
    }
    return -1;
}

/* Unlink entry i (found through prev) and put it on the free list. */
static void remove_at(struct near_cache *nc, uint32_t *prev, uint32_t i)
{
    struct nc_entry *x = &nc->e[i];
    *prev = x->next;
    release(x);
    x->state = NC_FREE;
    x->next = nc->free_head;
    nc->free_head = i + 1;
    nc->count--;
}

static void remove_uid(struct near_cache *nc, int64_t uid)
{
    uint32_t *prev;
    int64_t i = find(nc, uid, &prev);
    if (i >= 0)
        remove_at(nc, prev, (uint32_t)i);
}

/* CLOCK: the first entry under the hand not hit since the hand last passed is evicted; those
 * hit lose their mark. Ends within two turns of the hand. The table is full, so every entry is
 * in it. */
static void evict_one(struct near_cache *nc)
{
    for (;;) {
        struct nc_entry *x = &nc->e[nc->hand];
        nc->hand = nc->hand + 1 == nc->capacity ? 0 : nc->hand + 1;
        if (x->ref) {
            x->ref = 0;
            continue;
        }
        remove_uid(nc, x->uid);
        return;
    }
}

/* A fresh entry for uid (not in the table), linked in, FREE-looking fields cleared. */
static struct nc_entry *insert(struct near_cache *nc, int64_t uid)
{
    if (nc->count == nc->capacity)
        evict_one(nc);
    uint32_t i;
    if (nc->free_head != 0) {
        i = nc->free_head - 1;
        nc->free_head = nc->e[i].next;
    } else {
        i = nc->used++;
    }
    struct nc_entry *x = &nc->e[i];
    memset(x, 0, sizeof(*x));
    x->uid = uid;
    uint32_t *head = &nc->bucket[bucket_of(nc, uid)];
    x->next = *head;
    *head = i + 1;
    nc->count++;
    return x;
}

const struct nc_entry *near_cache_lookup(struct near_cache *nc, int64_t uid, int64_t now_ms)
{
    uint32_t *prev;
    int64_t i = find(nc, uid, &prev);
    if (i < 0)
        return NULL;
    struct nc_entry *x = &nc->e[i];
    if (x->state != NC_READY)
        return NULL;
    if (x->deadline_ms <= now_ms) { /* its key's TTL is up, whether or not Redis said so yet */
        remove_at(nc, prev, (uint32_t)i);
        return NULL;
    }
    x->ref = 1;
    return x;
}

uint64_t near_cache_begin_fetch(struct near_cache *nc, int64_t uid)
{
    int64_t i = find(nc, uid, NULL);
    struct nc_entry *x;
    if (i >= 0) {
        x = &nc->e[i];
        release(x);
    } else {
        x = insert(nc, uid);
    }
    if (++nc->seq == 0) /* 2^32 fetches in one generation: start a new one */
        nc->generation++, nc->seq = 1;
    x->state = NC_FETCHING;
    x->token = (uint64_t)nc->generation << 32 | nc->seq;
    return x->token;
}

int near_cache_complete_fetch(struct near_cache *nc, int64_t uid, uint64_t token, const struct nc_value *v)
{
    uint32_t *prev;
    int64_t i = find(nc, uid, &prev);
    if (i < 0)
        return 0;
    struct nc_entry *x = &nc->e[i];
    if (x->state != NC_FETCHING || x->token != token)
        return 0;
    if (v->route != NULL) {
        char *to = x->route.in;
        if (v->route_len > NC_ROUTE_INLINE) {
            to = x->route.heap = malloc(v->route_len);
            if (to == NULL) {
                remove_at(nc, prev, (uint32_t)i);
                return -1;
            }
        }
        memcpy(to, v->route, v->route_len);
        x->route_len = (uint32_t)v->route_len;
        x->has_route = true;
    }
    x->sessions = v->sessions;
    x->deadline_ms = v->deadline_ms;
    x->node = v->node;
    x->state = NC_READY;
    x->ref = 0;
    return 1;
}

void near_cache_cancel(struct near_cache *nc, int64_t uid, uint64_t token)
{
    uint32_t *prev;
    int64_t i = find(nc, uid, &prev);
    if (i >= 0 && nc->e[i].state == NC_FETCHING && nc->e[i].token == token)
        remove_at(nc, prev, (uint32_t)i);
}

bool near_cache_invalidate(struct near_cache *nc, int64_t uid)
{
    uint32_t *prev;
    int64_t i = find(nc, uid, &prev);
    if (i < 0)
        return false;
    remove_at(nc, prev, (uint32_t)i);
    return true;
}

void near_cache_clear(struct near_cache *nc)
{
    for (uint32_t i = 0; i < nc->used; i++)
        if (nc->e[i].state != NC_FREE) {
            release(&nc->e[i]);
            nc->e[i].state = NC_FREE;
        }
    if (nc->count > 0 || nc->used > 0)
        memset(nc->bucket, 0, ((size_t)1 << nc->bits) * sizeof(*nc->bucket));
    nc->used = 0;
    nc->free_head = 0;
    nc->count = 0;
    nc->hand = 0;
    nc->generation++;
    nc->seq = 0;
}

uint32_t near_cache_entries(const struct near_cache *nc)
{
    return nc->count;
}

const char *near_cache_route(const struct nc_entry *e, size_t *len)
{
    if (!e->has_route)
        return NULL;
    *len = e->route_len;
    return e->route_len > NC_ROUTE_INLINE ? e->route.heap : e->route.in;
}

int near_cache_copy_sessions(const struct pr_sessions *from, struct pr_sessions **out)
{
    *out = NULL;
    if (from == NULL || from->n == 0)
        return 0;
    *out = session_list_clone(from);
    return *out != NULL ? 0 : -1;
}

/* "<digits>" or "{<digits>}" as a positive int64. */
static bool parse_uid(const char *p, size_t n, int64_t *uid)
{
    if (n >= 2 && p[0] == '{' && p[n - 1] == '}')
        p++, n -= 2;
    if (n == 0 || n > 19)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(p[i] - '0');
    }
    if (v == 0 || v > (uint64_t)INT64_MAX)
        return false;
    *uid = (int64_t)v;
    return true;
}

bool near_cache_key_uid(const char *key, size_t len, int64_t *uid)
{
    static const char *const prefixes[] = {"user:route:", "user:sessions:"};
    for (size_t k = 0; k < sizeof(prefixes) / sizeof(prefixes[0]); k++) {
        size_t n = strlen(prefixes[k]);
        if (len > n && memcmp(key, prefixes[k], n) == 0)
            return parse_uid(key + n, len - n, uid);
    }
    return false;
}
