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

/* Writer thread only. */
void latency_record(struct latency_hist *h, uint64_t ns);

#endif
