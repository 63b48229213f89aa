/* A fixed-bucket latency histogram in Prometheus' shape: one writer thread, any reader. */
#ifndef PR_CORE_LATENCY_H
#define PR_CORE_LATENCY_H

#include <stdint.h>

#include "core/counter.h"

#define LATENCY_BUCKETS 16

/* Upper bounds, seconds; a last bucket (+Inf) follows. */
extern const double latency_bounds[LATENCY_BUCKETS];

struct latency_hist {
    counter_t buckets[LATENCY_BUCKETS + 1]; /* per bucket, not cumulative; [LATENCY_BUCKETS] = +Inf */
    counter_t sum_ns;                       /* total observed, nanoseconds */
};

/* A copy of a histogram's counts, for readers on other threads. */
struct latency_snapshot {
    uint64_t buckets[LATENCY_BUCKETS + 1]; /* per bucket, not cumulative, as in latency_hist */
    uint64_t sum_ns;
};

/* Writer thread only. */
void latency_record(struct latency_hist *h, uint64_t ns);

/* Any thread: copy h's counts into out. Each count is recent; they are not one instant's set. */
void latency_read(const struct latency_hist *h, struct latency_snapshot *out);

#endif
