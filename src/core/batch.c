#include "core/batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "core/session_list.h"
#include "presence.pb-c.h"

void batch_ids(const struct pr_request *req, const int64_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (req->args == NULL)
        return;
    if (req->method == PR_METHOD_BATCH_QUERY) {
        const Mpim__BatchQueryRouteReq *m = (const Mpim__BatchQueryRouteReq *)req->args;
        *ids = m->user_ids, *n = m->n_user_ids;
    } else if (req->method == PR_METHOD_BATCH_DELIVER) {
        const Mpim__BatchDeliverReq *m = (const Mpim__BatchDeliverReq *)req->args;
        *ids = m->user_ids, *n = m->n_user_ids;
    }
}

const char *batch_check_size(size_t n, int max_batch)
{
    return n > (size_t)max_batch ? "user_ids lists more ids than max_batch" : NULL;
}

void batch_split(const int64_t *ids, size_t n, uint32_t nshards, uint32_t *shard_of, uint32_t *count)
{
    memset(count, 0, (nshards + 1) * sizeof(*count));
    for (size_t i = 0; i < n; i++) {
        shard_of[i] = ids[i] > 0 ? hash_shard(ids[i], nshards) : nshards;
        count[shard_of[i]]++;
    }
}

struct pr_batch *batch_take(const int64_t *ids, size_t n, const uint32_t *shard_of, uint32_t which,
                            uint32_t count)
{
    struct pr_batch *b = calloc(1, sizeof(*b) + (size_t)count * sizeof(b->entries[0]));
    if (b == NULL)
        return NULL;
    for (size_t i = 0; i < n && b->n < count; i++) {
        if (shard_of[i] != which)
            continue;
        struct batch_entry *e = &b->entries[b->n++];
        e->user_id = ids[i];
        e->index = (uint32_t)i;
        e->code = MPIM__CODE__INVALID;
    }
    return b;
}

void batch_set_codes(struct pr_batch *b, int code)
{
    for (uint32_t i = 0; i < b->n; i++)
        b->entries[i].code = (uint8_t)code;
}

void batch_entry_take(struct batch_entry *e, struct pr_request *one)
{
    e->code = one->code;
    e->flag = one->flag;
    if (one->method != PR_METHOD_QUERY)
        return; /* a Deliver's route (mpim dialect) was only its channel */
    e->sessions = one->sessions;
    one->sessions = NULL;
    if (one->route == NULL)
        return;
    if (one->route != one->route_inline) {
        e->route = one->route; /* malloc'd: it changes hands */
        one->route = NULL;
    } else {
        e->route = one->route_len <= sizeof(e->route_inline) ? e->route_inline : malloc(one->route_len);
        if (e->route == NULL) {
            e->code = MPIM__CODE__INTERNAL;
            return;
        }
        memcpy(e->route, one->route, one->route_len);
    }
    e->route_len = one->route_len;
}

/* --- packing --- */

/* at[i] = the entry answering list position i (NULL: none), from the call's own entries and
 * every part on its back list. */
static void index_entries(const struct pr_request *call, size_t n, const struct batch_entry **at)
{
    const struct pr_batch *b = call->batch;
    for (const struct pr_request *p = call->batch->back;; p = p->next) {
        for (uint32_t j = 0; j < b->n; j++)
            if (b->entries[j].index < n)
                at[b->entries[j].index] = &b->entries[j];
        if (p == NULL)
            break;
        b = p->batch;
    }
}

static size_t pack_query(const struct batch_entry *const *at, const int64_t *ids, size_t n,
                         Mpim__Result *result, uint8_t **out)
{
    Mpim__RouteEntry *items = calloc(n, sizeof(*items));
    Mpim__RouteEntry **ptrs = calloc(n, sizeof(*ptrs));
    size_t len = 0;
    if (n > 0 && (items == NULL || ptrs == NULL))
        goto out;
    for (size_t i = 0; i < n; i++) {
        const struct batch_entry *e = at[i];
        Mpim__RouteEntry *r = &items[i];
        mpim__route_entry__init(r);
        r->user_id = ids[i];
        r->code = e != NULL ? (Mpim__Code)e->code : MPIM__CODE__INTERNAL;
        if (e != NULL && e->route != NULL)
            r->gateway_addr = (ProtobufCBinaryData){e->route_len, (uint8_t *)e->route};
        r->is_online = e != NULL && e->flag;
        if (e != NULL && e->sessions != NULL) {
            r->n_sessions = e->sessions->n;
            r->sessions = e->sessions->ptrs;
        }
        ptrs[i] = r;
    }
    Mpim__BatchQueryRouteResp resp = MPIM__BATCH_QUERY_ROUTE_RESP__INIT;
    resp.result = result;
    resp.n_routes = n;
    resp.routes = ptrs;
    size_t size = mpim__batch_query_route_resp__get_packed_size(&resp);
    *out = malloc(size > 0 ? size : 1);
    if (*out != NULL)
        len = mpim__batch_query_route_resp__pack(&resp, *out);
out:
    free(items);
    free(ptrs);
    return len;
}

static size_t pack_deliver(const struct batch_entry *const *at, const int64_t *ids, size_t n,
                           Mpim__Result *result, int64_t timestamp, uint8_t **out)
{
    Mpim__DeliverEntry *items = calloc(n, sizeof(*items));
    Mpim__DeliverEntry **ptrs = calloc(n, sizeof(*ptrs));
    size_t len = 0;
    if (n > 0 && (items == NULL || ptrs == NULL))
        goto out;
    for (size_t i = 0; i < n; i++) {
        const struct batch_entry *e = at[i];
        Mpim__DeliverEntry *d = &items[i];
        mpim__deliver_entry__init(d);
        d->user_id = ids[i];
        d->code = e != NULL ? (Mpim__Code)e->code : MPIM__CODE__INTERNAL;
        d->delivered = e != NULL && e->flag;
        ptrs[i] = d;
    }
    Mpim__BatchDeliverResp resp = MPIM__BATCH_DELIVER_RESP__INIT;
    resp.result = result;
    resp.n_results = n;
    resp.results = ptrs;
    resp.timestamp = timestamp;
    size_t size = mpim__batch_deliver_resp__get_packed_size(&resp);
    *out = malloc(size > 0 ? size : 1);
    if (*out != NULL)
        len = mpim__batch_deliver_resp__pack(&resp, *out);
out:
    free(items);
    free(ptrs);
    return len;
}

int batch_pack(struct pr_request *call)
{
    const int64_t *ids;
    size_t n;
    batch_ids(call, &ids, &n);
    const struct batch_entry **at = calloc(n > 0 ? n : 1, sizeof(*at));
    if (call->batch == NULL || at == NULL) {
        free(at);
        return -1;
    }
    index_entries(call, n, at);
    Mpim__Result result = MPIM__RESULT__INIT;
    result.code = (Mpim__Code)call->code;
    result.msg = call->msg;
    uint8_t *out = NULL;
    size_t len = call->method == PR_METHOD_BATCH_QUERY ? pack_query(at, ids, n, &result, &out)
                                                       : pack_deliver(at, ids, n, &result, call->timestamp, &out);
    free(at);
    if (out == NULL)
        return -1;
    call->packed = out;
    call->packed_len = len;
    return 0;
}

void batch_free(struct pr_batch *b)
{
    if (b == NULL)
        return;
    for (uint32_t i = 0; i < b->n; i++) {
        struct batch_entry *e = &b->entries[i];
        if (e->route != e->route_inline)
            free(e->route);
        session_list_free(e->sessions);
    }
    while (b->back != NULL) {
        struct pr_request *p = b->back;
        b->back = p->next;
        request_reset(p);
        free(p);
    }
    free(b);
}
