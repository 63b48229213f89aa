#include "core/latency.h"

const double latency_bounds[LATENCY_BUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,   0.1,     0.25,   0.5,   1.0,    2.5,   5.0,
};

void latency_record(struct latency_hist *h, uint64_t ns)
{
    double s = (double)ns / 1e9;
    int i = 0;
    while (i < LATENCY_BUCKETS && s > latency_bounds[i])
        i++;
    counter_add(&h->buckets[i], 1);
    counter_add(&h->sum_ns, ns);
}

void latency_read(const struct latency_hist *h, struct latency_snapshot *out)
{
    for (int i = 0; i <= LATENCY_BUCKETS; i++)
        out->buckets[i] = counter_get(&h->buckets[i]);
    out->sum_ns = counter_get(&h->sum_ns);
}
