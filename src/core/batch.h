/* Batch calls (contract §7): BatchQueryRoute and BatchDeliver, split by shard and gathered again.
 * Pure code, any thread: the acceptor splits and packs, a shard fills a part's entries.
 *
 * Who owns what (request.h's rule, applied twice):
 *  - The call: the request decoded from the client's frame. It stays with the acceptor from the
 *    frame to the answer and never crosses a ring. Its batch is bookkeeping only: the ids that
 *    need no shard (id <= 0: INVALID in its own entry), the number of parts still out, and the
 *    parts that are back.
 *  - A part: one request per shard that has ids in the call, holding that shard's ids in list
 *    order, each with its position in the list, and room for their answers. It crosses the rings
 *    like any request: once enqueued the shard owns it and writes its entries; back in the outbox
 *    it is the acceptor's again. Its `call` pointer is for the acceptor only (a shard never follows
 *    it); its `message` (BatchDeliver) points into the call's args, which the acceptor keeps
 *    alive and unchanged until the last part is back.
 *  - A part that comes back, or that could not be queued (its entries OVERLOADED), is linked on
 *    its call's `back` list (through req->next); the answer is packed from the entries of every
 *    part once none is out (batch_pack), then the parts are freed. */
#ifndef PR_CORE_BATCH_H
#define PR_CORE_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/request.h"

/* A gateway address this long or shorter is kept in the entry: no malloc per id. */
#define BATCH_ROUTE_INLINE 48

/* One listed id and what its single call answered. */
struct batch_entry {
    int64_t user_id;
    uint32_t index;               /* position in the call's list: where this answer goes */
    uint8_t code;                 /* Mpim__Code of the id's single call */
    bool flag;                    /* is_online (QueryRoute) / delivered (Deliver) */
    char *route;                  /* QueryRoute gateway_addr: route_inline or malloc'd; NULL: none */
    size_t route_len;
    struct pr_sessions *sessions; /* QueryRoute: the live sessions; NULL: none */
    char route_inline[BATCH_ROUTE_INLINE];
};

struct pr_batch {
    /* The call's (acceptor only). */
    uint32_t parts_out;       /* parts at their shards */
    struct pr_request *back;  /* parts back or never sent, linked by ->next */
    /* A part's: `call` set by the acceptor; the rest scratch of the shard that owns the part. */
    struct pr_request *call;  /* the call this part belongs to; never followed by a shard */
    uint32_t next;            /* next entry to start */
    uint32_t running;         /* entries started, not finished */
    uint32_t done;            /* entries finished */
    bool stepping;            /* the shard's start loop is on the stack (shards/batch_run.c) */
    /* Both. */
    uint32_t n;               /* entries: the call's own (ids <= 0), or the part's ids */
    struct batch_entry entries[];
};

/* The ids of a batch call (its decoded args); none for any other request. */
void batch_ids(const struct pr_request *req, const int64_t **ids, size_t *n);

/* NULL if a call may list n ids, else why not (INVALID for the whole call, naming the field). */
const char *batch_check_size(size_t n, int max_batch);

/* Where each id goes: shard_of[i] = hash_shard(ids[i], nshards) (the shard its single call would
 * go to), or nshards for an id <= 0 (answered INVALID by the acceptor, sent nowhere).
 * count[0..nshards] (nshards + 1 slots) = how many ids go to each, the invalid ones last. */
void batch_split(const int64_t *ids, size_t n, uint32_t nshards, uint32_t *shard_of, uint32_t *count);

/* The count ids with shard_of[i] == which, in list order, as a batch with their positions; its
 * entries' codes are INVALID until answered. NULL out of memory. */
struct pr_batch *batch_take(const int64_t *ids, size_t n, const uint32_t *shard_of, uint32_t which,
                            uint32_t count);

/* Set every entry's code (OVERLOADED for a part no shard took). */
void batch_set_codes(struct pr_batch *b, int code);

/* An id's single call (QueryRoute or Deliver) has finished: move its answer into e (code, flag,
 * and for QueryRoute the gateway and sessions, which `one` no longer holds afterwards). */
void batch_entry_take(struct batch_entry *e, struct pr_request *one);

/* Pack the call's response (BatchQueryRouteResp / BatchDeliverResp: result = call->code and
 * call->msg, BatchDeliver's call->timestamp) into call->packed, one entry per listed id in list
 * order, from the call's own entries and every part on its back list. An id no entry answers
 * (a part that could not be made) gets INTERNAL. 0, or -1 out of memory (nothing packed). */
int batch_pack(struct pr_request *call);

/* Free a batch: its entries' gateways and sessions, and the parts on its back list. NULL is fine. */
void batch_free(struct pr_batch *b);

#endif
