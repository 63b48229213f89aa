/* Per-hop timestamps on a sample of requests: where the time of a slow request goes.
 *
 * Built only with -DPRESENCE_TRACE=ON; otherwise every TRACE_* hook below compiles to nothing
 * and struct pr_request carries no stamps, so the release hot path is unchanged.
 *
 * One request in TRACE_SAMPLE is stamped (CLOCK_MONOTONIC) at each hop; the stamps travel in
 * the request itself (acceptor -> shard -> acceptor, so the rings' ordering covers them). The
 * response's send happens after the request object is recycled, so the acceptor keeps the
 * finished stamps of a connection until its output is written. The last TRACE_KEEP complete
 * traces are kept; trace_dump logs p50/p90/p99/max per segment and what the slowest 1 % spent
 * where (acceptor thread, at exit).
 *
 * The two wake-ups (acceptor -> shard, shard -> acceptor) are not per request: each side records
 * when it sent one (the first since the other side took the last), and the receiver charges it
 * to the requests it then takes. A request that arrived after that wake-up was already sent is
 * charged no wake-up wait. */
#ifndef PR_CORE_TRACE_H
#define PR_CORE_TRACE_H

#include <stdint.h>

enum trace_hop {
    TRACE_READ,     /* acceptor: frame parsed, dispatch begins */
    TRACE_PUSHED,   /* acceptor: in the shard's inbox */
    TRACE_WAKE,     /* acceptor: the shard's wake-up sent (loop turn end) */
    TRACE_POPPED,   /* shard: taken from the inbox */
    TRACE_SENT,     /* shard: first Redis command handed to hiredis */
    TRACE_REPLY,    /* shard: last Redis reply callback before the answer */
    TRACE_ANSWERED, /* shard: shard_answer, in the outbox */
    TRACE_NOTIFY,   /* shard: the acceptor's wake-up sent (loop turn end) */
    TRACE_TAKEN,    /* acceptor: taken from the outbox */
    TRACE_ENCODED,  /* acceptor: response encoded into the connection's buffer */
    TRACE_WRITTEN,  /* acceptor: that buffer fully sent */
    TRACE_HOPS
};

#define TRACE_SAMPLE 16  /* one request in this many is traced */
#define TRACE_KEEP 16384 /* complete traces kept (the last ones) */

#ifdef PRESENCE_TRACE

struct pr_request;

/* Acceptor thread. */
void trace_read(struct pr_request *req);
void trace_stamp(struct pr_request *req, int hop); /* no-op on an unsampled request */
void trace_wake_sent(int shard);                   /* shard's wake-up written */
void trace_notified(int shard);                    /* on_answered: take the shard's notify time */
void trace_taken(struct pr_request *req);
void trace_encoded(const void *conn, struct pr_request *req);
void trace_written(const void *conn); /* conn's output buffer is now empty */
void trace_dump(void);

/* Shard thread. */
void trace_woken(int shard);          /* on_wake: take the acceptor's wake-up time */
void trace_popped(struct pr_request *req);
void trace_sent(struct pr_request *req);
void trace_reply_seen(void);          /* a Redis reply callback begins */
void trace_answered(struct pr_request *req);
void trace_notify_sent(int shard);    /* acceptor's wake-up written */

#define TRACE_FIELDS uint64_t trace[TRACE_HOPS];
#define TRACE_HOOK(call) call
#else
#define TRACE_FIELDS
#define TRACE_HOOK(call) ((void)0)
#endif

#endif
