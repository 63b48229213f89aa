/* One generator thread: its own libev loop and its share of the connections.
 *
 * Three ways to drive the connections (enum plan_mode):
 *   closed  - every connection keeps `pipeline` requests outstanding; a response frees a slot;
 *   open    - requests follow a fixed schedule (rate / threads per second, round-robin over the
 *             thread's connections); latency counts from each request's *scheduled* time, so a
 *             slow server cannot hide its queueing (no coordinated omission);
 *   preload - bind ids lo..hi once each, `pipeline` deep per connection, then stop.
 *
 * Time is CLOCK_MONOTONIC nanoseconds. Requests count ("measured") when they are sent (closed)
 * or scheduled (open) in [t_measure, t_end); after t_end nothing new is sent and the thread
 * waits up to `drain_ns` for what is outstanding. The plan is read-only and shared; a worker
 * writes only its own struct. */
#ifndef BENCH_WORKER_H
#define BENCH_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "histogram.h"
#include "workload.h"

enum plan_mode { PLAN_CLOSED, PLAN_OPEN, PLAN_PRELOAD };

struct plan {
    enum plan_mode mode;
    struct sockaddr_storage addr;   /* server address */
    socklen_t addrlen;
    int pipeline;                   /* closed/preload: requests in flight per connection */
    int max_outstanding;            /* open: cap per connection; the schedule waits beyond it */
    double rate;                    /* open: requests per second, this thread */
    struct method_mix mix;          /* which methods */
    struct keydist keys;            /* which users */
    const char *service;            /* RpcHeader service_name */
    const char *gateway;            /* gateway_addr */
    const uint8_t *message;         /* Deliver payload */
    size_t message_len;
    uint64_t seed;                  /* random seed; each connection derives its own */
    uint64_t t_start;               /* when sending starts */
    uint64_t t_measure;             /* warm-up over */
    uint64_t t_end;                 /* measurement over: stop sending */
    uint64_t drain_ns;              /* how long to wait for outstanding responses after t_end */
};

struct worker_stats {
    uint64_t codes[BENCH_METHODS][CODE_SLOTS]; /* measured responses, by method and Result code */
    uint64_t transport_errors;  /* measured requests lost: connection failed, bad response */
    uint64_t unanswered;        /* measured requests still outstanding when the drain timed out */
    uint64_t send_failed;       /* open: measured slots whose connection was down */
    uint64_t not_sent;          /* open: measured slots still due when t_end came (schedule behind) */
    uint64_t scheduled;         /* open: measured slots (the target) */
    uint64_t responses_total;   /* every response, warm-up and drain included */
    uint64_t connects;          /* connections established */
    uint64_t connect_failures;  /* connect() attempts that failed */
    uint64_t max_lag_ns;        /* open: largest (send time - scheduled time) of a measured request */
    uint64_t late_1ms;          /* open: measured requests sent more than 1 ms behind schedule */
    struct histogram hist[BENCH_METHODS]; /* latency of measured responses, per method */
    char first_error[200];      /* the first transport error or non-OK Result message seen */
};

struct worker {
    int id;                     /* 0.. */
    int nthreads;               /* workers in this run (for the schedule's phase) */
    const struct plan *plan;    /* shared, read-only */
    int nconns;                 /* connections this thread owns */
    int64_t seq_next, seq_end;  /* preload: next id to bind, one past the last */
    pthread_t thread;
    struct worker_stats stats;  /* written only by this thread; read after join */
    char start_error[200];      /* set if the thread could not start its loop */
};

/* Start the thread. Returns 0 or -1. */
int worker_start(struct worker *w);
/* Join it; w->stats is final afterwards. */
void worker_join(struct worker *w);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t now_ns(void);

#endif
