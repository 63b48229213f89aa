#include "core/cluster_map.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cluster_map_init(struct cluster_map *m)
{
    m->nnodes = 0;
    memset(m->nodes, 0, sizeof(m->nodes));
    for (size_t s = 0; s < CLUSTER_SLOTS; s++)
        m->slot_owner[s] = CLUSTER_NODE_NONE;
}

int cluster_map_find(const struct cluster_map *m, const struct cluster_addr *addr)
{
    for (int i = 0; i < m->nnodes; i++)
        if (m->nodes[i].used && cluster_addr_equal(&m->nodes[i].addr, addr))
            return i;
    return -1;
}

/* The index of addr, taking the first free index (or a new one) if it is not there; -1 if full. */
static int find_or_add(struct cluster_map *m, const struct cluster_addr *addr)
{
    int i = cluster_map_find(m, addr);
    if (i >= 0)
        return i;
    for (i = 0; i < m->nnodes && m->nodes[i].used; i++)
        ;
    if (i == m->nnodes) {
        if (m->nnodes == CLUSTER_MAP_MAX_NODES)
            return -1;
        m->nnodes++;
    }
    m->nodes[i].addr = *addr;
    m->nodes[i].used = true;
    return i;
}

const struct cluster_addr *cluster_map_node(const struct cluster_map *m, int i)
{
    if (i < 0 || i >= m->nnodes || !m->nodes[i].used)
        return NULL;
    return &m->nodes[i].addr;
}

int cluster_map_node_for_slot(const struct cluster_map *m, uint16_t slot)
{
    if (slot >= CLUSTER_SLOTS || m->slot_owner[slot] == CLUSTER_NODE_NONE)
        return -1;
    return m->slot_owner[slot];
}

int cluster_map_set_slot(struct cluster_map *m, uint16_t slot, const struct cluster_addr *addr)
{
    if (slot >= CLUSTER_SLOTS)
        return -1;
    int i = find_or_add(m, addr);
    if (i >= 0)
        m->slot_owner[slot] = (uint16_t)i;
    return i;
}

/* --- CLUSTER SLOTS --- */

static void fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (err == NULL || errlen == 0)
        return;
    int n = snprintf(err, errlen, "CLUSTER SLOTS reply: ");
    if (n < 0 || (size_t)n >= errlen)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static const char *type_name(int type)
{
    switch (type) {
    case REDIS_REPLY_STRING:
        return "string";
    case REDIS_REPLY_ARRAY:
        return "array";
    case REDIS_REPLY_INTEGER:
        return "integer";
    case REDIS_REPLY_NIL:
        return "nil";
    case REDIS_REPLY_STATUS:
        return "status";
    case REDIS_REPLY_ERROR:
        return "error";
    default:
        return "unknown type";
    }
}

/* One node entry [host, port, id?, ...] into *out. Elements after the port (id, 7.0's metadata)
 * are not used; the id, when present, must still be a string so that a shifted layout is caught. */
static int parse_node(const redisReply *n, size_t entry, const char *role, struct cluster_addr *out,
                      char *err, size_t errlen)
{
    if (n == NULL || n->type != REDIS_REPLY_ARRAY || n->elements < 2) {
        fail(err, errlen, "entry %zu: %s is not an array of [host, port, ...]", entry, role);
        return -1;
    }
    const redisReply *host = n->element[0], *port = n->element[1];
    if (host == NULL || (host->type != REDIS_REPLY_STRING && host->type != REDIS_REPLY_NIL)) {
        fail(err, errlen, "entry %zu: %s host is %s, not a string", entry, role,
             host ? type_name(host->type) : "missing");
        return -1;
    }
    if (port == NULL || port->type != REDIS_REPLY_INTEGER) {
        fail(err, errlen, "entry %zu: %s port is %s, not an integer", entry, role,
             port ? type_name(port->type) : "missing");
        return -1;
    }
    if (n->elements >= 3 && (n->element[2] == NULL || n->element[2]->type != REDIS_REPLY_STRING)) {
        fail(err, errlen, "entry %zu: %s node id is not a string", entry, role);
        return -1;
    }
    const char *h = host->type == REDIS_REPLY_NIL ? NULL : host->str;
    if (cluster_addr_set(out, h, h ? host->len : 0, port->integer) != 0) {
        fail(err, errlen, "entry %zu: %s address is unusable (port %lld, host of %zu bytes)", entry, role,
             port->integer, h ? host->len : 0);
        return -1;
    }
    return 0;
}

static int parse_slot(const redisReply *r, size_t entry, const char *what, long long *out, char *err,
                      size_t errlen)
{
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        fail(err, errlen, "entry %zu: %s slot is %s, not an integer", entry, what,
             r ? type_name(r->type) : "missing");
        return -1;
    }
    if (r->integer < 0 || r->integer >= (long long)CLUSTER_SLOTS) {
        fail(err, errlen, "entry %zu: %s slot %lld outside 0..16383", entry, what, r->integer);
        return -1;
    }
    *out = r->integer;
    return 0;
}

/* One entry [start, end, master, replica...], checked; the master's address into *master. */
static int parse_entry(const redisReply *r, size_t e, long long *start, long long *end,
                       struct cluster_addr *master, char *err, size_t errlen)
{
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements < 3) {
        fail(err, errlen, "entry %zu is not an array of [start, end, master, ...]", e);
        return -1;
    }
    if (parse_slot(r->element[0], e, "start", start, err, errlen) != 0 ||
        parse_slot(r->element[1], e, "end", end, err, errlen) != 0)
        return -1;
    if (*start > *end) {
        fail(err, errlen, "entry %zu: start slot %lld > end slot %lld", e, *start, *end);
        return -1;
    }
    if (parse_node(r->element[2], e, "master", master, err, errlen) != 0)
        return -1;
    /* Replicas are not kept, but a malformed one means we misread the layout. */
    for (size_t k = 3; k < r->elements; k++) {
        struct cluster_addr replica;
        if (parse_node(r->element[k], e, "replica", &replica, err, errlen) != 0)
            return -1;
    }
    return 0;
}

/* Everything except the copy into m: t starts as m's nodes with no slot assigned. Two passes:
 * the first checks every entry and frees the indices of masters no longer listed, so that the
 * second can give those indices to newcomers (after a failover the promoted replica takes its
 * old master's index) and the node table does not creep up with every failover. */
static int parse_into(struct cluster_map *t, const redisReply *reply, char *err, size_t errlen)
{
    if (reply == NULL) {
        fail(err, errlen, "no reply");
        return -1;
    }
    if (reply->type == REDIS_REPLY_ERROR) {
        fail(err, errlen, "error: %.*s", (int)(reply->len < 200 ? reply->len : 200),
             reply->str ? reply->str : "");
        return -1;
    }
    if (reply->type != REDIS_REPLY_ARRAY) {
        fail(err, errlen, "%s, not an array", type_name(reply->type));
        return -1;
    }
    long long start, end;
    struct cluster_addr master;
    bool listed[CLUSTER_MAP_MAX_NODES] = {false};
    for (size_t e = 0; e < reply->elements; e++) {
        if (parse_entry(reply->element[e], e, &start, &end, &master, err, errlen) != 0)
            return -1;
        int i = cluster_map_find(t, &master);
        if (i >= 0)
            listed[i] = true;
    }
    for (int i = 0; i < t->nnodes; i++)
        if (!listed[i])
            t->nodes[i].used = false;
    for (size_t e = 0; e < reply->elements; e++) {
        (void)parse_entry(reply->element[e], e, &start, &end, &master, err, errlen); /* checked above */
        int i = find_or_add(t, &master);
        if (i < 0) {
            fail(err, errlen, "more than %u masters", CLUSTER_MAP_MAX_NODES);
            return -1;
        }
        for (long long s = start; s <= end; s++) {
            if (t->slot_owner[s] != CLUSTER_NODE_NONE) {
                fail(err, errlen, "entry %zu: slot %lld listed twice", e, s);
                return -1;
            }
            t->slot_owner[s] = (uint16_t)i;
        }
    }
    while (t->nnodes > 0 && !t->nodes[t->nnodes - 1].used)
        t->nnodes--;
    return 0;
}

int cluster_map_parse(struct cluster_map *m, const redisReply *reply, char *err, size_t errlen)
{
    /* Parse into a scratch copy so that a reply rejected half-way leaves m exactly as it was. */
    struct cluster_map *t = malloc(sizeof(*t));
    if (t == NULL) {
        fail(err, errlen, "out of memory");
        return -1;
    }
    t->nnodes = m->nnodes;
    memcpy(t->nodes, m->nodes, sizeof(t->nodes));
    for (size_t s = 0; s < CLUSTER_SLOTS; s++)
        t->slot_owner[s] = CLUSTER_NODE_NONE;
    int rc = parse_into(t, reply, err, errlen);
    if (rc == 0)
        memcpy(m, t, sizeof(*m));
    free(t);
    return rc;
}
