/* The one object that crosses the acceptor <-> shard rings.
 *
 * Ownership (nng's rule): the acceptor allocates a request, fills the "acceptor" part and
 * enqueues it on a shard's inbox; once the enqueue succeeded the shard owns it and may write
 * the "result" and "scratch" parts. The shard hands it back through its outbox; from then on
 * the acceptor owns it again, encodes the response and releases it (request_release).
 * Nobody else ever touches it, so none of these fields needs atomics.
 *
 * A batch call (BatchQueryRoute, BatchDeliver) never crosses a ring itself: the acceptor splits
 * its ids into one part per shard, each part a request of its own under the rule above, and keeps
 * the call until every part is back (core/batch.h). */
#ifndef PR_CORE_REQUEST_H
#define PR_CORE_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "core/pb_arena.h"
#include "core/session_list.h"
#include "core/trace.h"

struct pr_batch;

enum pr_method {
    PR_METHOD_BIND,
    PR_METHOD_QUERY,
    PR_METHOD_DELIVER,
    PR_METHOD_UNBIND,
    PR_METHOD_HEARTBEAT,
    PR_METHOD_STATS, /* answered by the acceptor itself: it names no user */
    PR_METHOD_BATCH_QUERY,   /* BatchQueryRoute: split by shard into parts, gathered again (core/batch.h) */
    PR_METHOD_BATCH_DELIVER, /* BatchDeliver: likewise */
    PR_METHOD_GATEWAY_HEARTBEAT, /* GatewayHeartbeat (§8): names a gateway, not a user */
    PR_METHOD_DRAIN_GATEWAY,     /* DrainGateway (§8): likewise */
    PR_METHOD_COUNT
};

/* Mpim__Code values: OK .. OVERLOADED. */
#define PR_CODE_COUNT 6

/* Result.msg is short and ours (or a clipped Redis error); it lives inline. */
#define PR_MSG_MAX 128
/* A gateway address this long or shorter is kept inline: no malloc per QueryRoute. */
#define PR_ROUTE_INLINE 64
/* Decoded args of this size or less need no malloc (a Deliver's payload may still need one). */
#define PR_ARENA_BYTES 320

struct pr_request {
    /* Acceptor part: written before the enqueue, read-only for the shard. */
    uint64_t conn_id;            /* connection that asked: slot | generation << 32 */
    uint32_t seq;                /* position in that connection's reorder window */
    uint8_t method;              /* enum pr_method */
    int64_t user_id;             /* field 1 of every request */
    ProtobufCBinaryData gateway; /* Bind/Unbind/Heartbeat gateway_addr, points into args */
    ProtobufCBinaryData message; /* Deliver payload, points into args */
    ProtobufCBinaryData device;  /* Bind/Unbind/Heartbeat device_id ("" = the default device), into args */
    int32_t platform;            /* Bind: 0-255 */
    int64_t fence;               /* Unbind/Heartbeat: the session's epoch, 0 = any */
    int32_t lease_ms;            /* GatewayHeartbeat: 1000-600000 */
    struct pr_batch *batch;      /* batch methods: a part's ids and answers (owned with the request), or the
                                  * call's own bookkeeping; NULL otherwise. Ownership: core/batch.h */
    ProtobufCMessage *args;      /* decoded request message (in `arena`); NULL for a reply made without one */
    struct pb_arena arena;       /* where args were decoded */
    uint64_t started_ns;         /* monotonic time the frame was read; 0 for an unknown method */

    /* Result part: written by whoever answers (a shard, or the acceptor for errors it finds). */
    uint8_t code;       /* Mpim__Code */
    bool flag;          /* is_online / delivered / unbound / refreshed, by method */
    int64_t timestamp;  /* Deliver: server time, ms since the epoch */
    char *route;        /* QueryRoute gateway_addr: route_inline, or malloc'd if longer; NULL if none.
                         * BindRoute: its route_key, NUL-terminated in route_inline */
    size_t route_len;   /* length of route (it may hold any byte) */
    char route_inline[PR_ROUTE_INLINE];
    char msg[PR_MSG_MAX]; /* Result.msg, NUL-terminated; empty for none */
    int64_t epoch;      /* Bind: the new session's epoch */
    int64_t count;      /* GatewayHeartbeat: expires_ms; DrainGateway: sessions_removed */
    struct pr_sessions *sessions; /* Bind: displaced; QueryRoute: live sessions; NULL if none */
    uint8_t *packed;    /* Stats: the whole response message, packed by the acceptor (malloc'd) */
    size_t packed_len;

    /* Scratch: meaningful only to the shard while it owns the request. */
    uint8_t pending;             /* Redis replies still awaited */
    uint8_t attempts;            /* Deliver publish attempts, or script runs (NOSCRIPT), so far */
    int32_t replicas;            /* replicas that confirmed the write's WAIT; -1: not asked yet */
    uint16_t slot;               /* Redis Cluster slot of the user's keys (0 off a cluster) */
    uint8_t notice;              /* enum in handlers.c: which route-change notice to publish */
    bool failed;                 /* one of several pipelined commands failed */
    double retry_at;             /* Deliver: when the next publish attempt is due (ev_now) */
    struct pr_request *part;     /* one id of a batch part, run as its single call: that part, to which
                                  * shard_answer returns it (shards/batch_run.c); NULL otherwise */
    uint32_t entry;              /* ... and the id's entry in the part */
    void *script_link;           /* Bind on a cluster: the link that answered the session script while
                                  * the gateway's slot bit is still out (shards/gateways.c) */
    struct pr_request *next;     /* intrusive list link: acceptor free list, shard retry queue */
    TRACE_FIELDS                 /* PRESENCE_TRACE builds: per-hop stamps (core/trace.h) */

    uint8_t arena_buf[PR_ARENA_BYTES]; /* storage behind `arena` */
};

/* Record the answer in one call: code and a printf-style message (may be NULL). */
void request_set_result(struct pr_request *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Free what the request owns (args, route, packed, sessions, batch) and clear it for reuse. Its
 * owner only (the acceptor, or a shard for the requests it makes itself: shards/batch_run.c). */
void request_reset(struct pr_request *req);

/* GatewayHeartbeat and DrainGateway name a gateway, no user: they go to the gateway's shard and
 * are checked by their gateway_addr. */
static inline bool request_names_gateway(int method)
{
    return method == PR_METHOD_GATEWAY_HEARTBEAT || method == PR_METHOD_DRAIN_GATEWAY;
}
const char *request_method_name(int method);
/* The name of a Mpim__Code as the proto spells it ("OK", "INVALID", ...); "UNKNOWN" for any
 * other value. The one table: metrics labels, the CLI, the client library and the bench use it. */
const char *request_code_name(int code);

#endif
