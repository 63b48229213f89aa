/* The acceptor thread's context (h2o's per-thread context): its loop, the listener, every
 * connection, and the acceptor's side of each shard's rings. Acceptor thread only, except
 * acceptor_init/run/destroy, which the main thread calls before and after, and the stats
 * readers (acceptor_stats.c), which any thread may call. */
#ifndef PR_NET_ACCEPTOR_H
#define PR_NET_ACCEPTOR_H

#include <stdbool.h>
#include <stdint.h>

#include <ev.h>
#include <protobuf-c/protobuf-c.h>

#include "core/clock.h"
#include "core/config.h"
#include "core/counter.h"
#include "core/latency.h"
#include "core/request.h"
#include "core/log.h"
#include "net/listener.h"

struct conn;
struct shard;
struct pr_request;

/* Answers a Stats request: fills req->packed and its result. Main sets the metrics module's
 * packer here, so the acceptor calls it without knowing it: net/ never includes metrics/,
 * which reads the acceptor only through acceptor_stats_read. The dependency points one way. */
typedef void acceptor_stats_fn(const void *source, struct pr_request *req);

/* Written only by the acceptor thread; other threads read them through acceptor_stats_read. */
struct acceptor_counters {
    counter_t accepted;          /* connections accepted and kept */
    counter_t rejected;          /* connections over max_connections, closed at once */
    counter_t open;              /* connections open now (gauge) */
    counter_t protocol_errors;   /* connections closed for an unrecoverable framing error */
    counter_t output_overflows;  /* connections closed for exceeding max_output_bytes */
    counter_t idle_closed;       /* connections closed after idle_timeout */
    counter_t bytes_in;          /* bytes read from clients */
    counter_t bytes_out;         /* bytes written to clients */
    counter_t draining;          /* 1 once shutdown began (gauge, for /readyz) */
    /* Requests answered by the acceptor itself (INVALID, OVERLOADED, Stats, and every batch call:
     * gathered here, net/scatter.c), by method and code; row PR_METHOD_COUNT is for frames whose
     * service or method is unknown. */
    counter_t answered_here[PR_METHOD_COUNT + 1][PR_CODE_COUNT];
    struct latency_hist latency[PR_METHOD_COUNT]; /* frame read -> response queued for writing */
};

struct acceptor {
    const struct presence_conf *conf; /* read-only */
    struct ev_loop *loop;             /* the default loop: this thread's */
    struct listener listener;

    struct conn **conns;              /* by slot; NULL = free */
    uint32_t *generation;             /* per slot, bumped on close: stale ids never match */
    uint32_t *free_slots;             /* stack of free slot numbers */
    uint32_t nfree;
    struct conn *dirty;               /* connections to flush or resume before sleeping */

    acceptor_stats_fn *stats;         /* answers Stats; set by main before running */
    const void *stats_source;         /* its first argument */
    /* Called once on SIGTERM/SIGINT before draining starts (bounded; main sets the registrar's
     * deregistration, so that discovery stops sending clients here first); NULL: none. */
    void (*before_drain)(void *arg);
    void *before_drain_arg;           /* its argument */
    struct shard *shards;             /* N shards */
    int nshards;
    ev_async *answered;               /* per shard: its outbox has answers */
    counter_t *inflight;              /* per shard: requests handed over, not yet back (gauge) */
    bool *wake;                       /* per shard: got requests this turn, wake before sleeping */

    struct pr_request *free_requests; /* recycled request objects */
    uint32_t nfree_requests;

    ev_prepare before_sleep;          /* wake shards, flush connections: once per loop turn */
    ev_signal sigterm, sigint;
    ev_signal sighup;                 /* reopen the log file (rotation) */
    ev_timer drain_deadline;          /* shutdown gives up waiting after this */
    ev_timer idle_sweep;              /* closes quiet connections past idle_timeout */
    bool draining;                    /* SIGTERM/SIGINT seen */

    uint64_t now_ns;                  /* monotonic time of this loop turn, 0 = not read yet */

    struct acceptor_counters counters;
    struct log_limit reject_log;      /* max_connections rejections */
    struct log_limit protocol_log;    /* bad frames */
};

int acceptor_init(struct acceptor *acc, const struct presence_conf *conf, struct ev_loop *loop,
                  struct shard *shards, int nshards);
/* Start accepting (the last step of start-up), then run until shutdown completes. -1: the
 * port could not be listened on; nothing ran. */
int acceptor_run(struct acceptor *acc);
/* After the shards stopped: take back what they answered last, free everything. */
void acceptor_destroy(struct acceptor *acc);

/* A new client socket from the listener. */
void acceptor_add_conn(struct acceptor *acc, int fd);
/* The connection's slot is free again. */
void acceptor_remove_conn(struct acceptor *acc, struct conn *c);
/* Put the connection on this turn's flush list. */
void acceptor_mark_dirty(struct acceptor *acc, struct conn *c);

/* Turn one whole frame into a request: answer it here if it is bad, or hand it to its shard. */
void acceptor_dispatch(struct acceptor *acc, struct conn *c, const uint8_t *frame_args, size_t args_len,
                       const ProtobufCBinaryData *service, const ProtobufCBinaryData *method);
/* Answer req on c from the acceptor itself, counted under `row` of answered_here (its method, or
 * PR_METHOD_COUNT for an unknown one). */
void acceptor_answer_here(struct acceptor *acc, struct conn *c, struct pr_request *req, int row);
/* The open connection with this id, or NULL if it has closed since (ids are never reused). */
struct conn *acceptor_find_conn(struct acceptor *acc, uint64_t id);

/* Monotonic nanoseconds, read once per loop turn: latency metrics need no clock call per request. */
static inline uint64_t acceptor_now_ns(struct acceptor *acc)
{
    if (acc->now_ns == 0)
        acc->now_ns = clock_mono_ns();
    return acc->now_ns;
}

/* What metrics and Stats may know of the acceptor, as plain values (struct acceptor_counters'
 * fields, and the same meanings). Each value is recent; together they are not one instant's. */
struct acceptor_stats {
    uint64_t accepted, rejected, open, protocol_errors, output_overflows, idle_closed;
    uint64_t bytes_in, bytes_out;
    bool draining;
    uint64_t answered_here[PR_METHOD_COUNT + 1][PR_CODE_COUNT];
    struct latency_snapshot latency[PR_METHOD_COUNT];
};

/* Any thread: copy the counters; requests handed to shard i and not yet back. */
void acceptor_stats_read(const struct acceptor *acc, struct acceptor_stats *out);
uint64_t acceptor_shard_inflight(const struct acceptor *acc, int shard);

/* Request objects: allocate (calloc or recycled) and give back. */
struct pr_request *acceptor_request_new(struct acceptor *acc);
void acceptor_request_free(struct acceptor *acc, struct pr_request *req);

#endif
