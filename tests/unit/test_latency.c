/* core/latency: the fixed-bucket request latency histogram behind
 * impresence_request_duration_seconds. Buckets are Prometheus' "le": an upper bound, inclusive. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <string.h>

#include "core/latency.h"

/* Bucket an observation of ns nanoseconds landed in, checking it is the only one. */
static int landed(uint64_t ns)
{
    struct latency_hist h;
    memset(&h, 0, sizeof(h));
    latency_record(&h, ns);
    int found = -1;
    for (int b = 0; b <= LATENCY_BUCKETS; b++) {
        uint64_t n = counter_get(&h.buckets[b]);
        cr_assert_leq(n, 1, "%llu ns: bucket %d has %llu", (unsigned long long)ns, b, (unsigned long long)n);
        if (n == 1) {
            cr_assert_eq(found, -1, "%llu ns: in buckets %d and %d", (unsigned long long)ns, found, b);
            found = b;
        }
    }
    cr_assert_neq(found, -1, "%llu ns: in no bucket", (unsigned long long)ns);
    cr_assert_eq(counter_get(&h.sum_ns), ns);
    return found;
}

Test(latency, bounds_are_the_documented_ones)
{
    static const double want[LATENCY_BUCKETS] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                 0.005,   0.01,   0.025,   0.05,   0.1,   0.25,
                                                 0.5,     1.0,    2.5,     5.0};
    for (int b = 0; b < LATENCY_BUCKETS; b++)
        cr_assert_eq(latency_bounds[b], want[b], "bound %d is %g, want %g", b, latency_bounds[b], want[b]);
}

/* An observation exactly at a bound belongs to that bucket; one nanosecond more, to the next. */
Test(latency, bucket_edges_are_inclusive)
{
    static const uint64_t edge_ns[LATENCY_BUCKETS] = {
        50000,     100000,    250000,    500000,     1000000,    2500000,   5000000,    10000000,
        25000000,  50000000,  100000000, 250000000,  500000000,  1000000000, 2500000000, 5000000000};
    for (int b = 0; b < LATENCY_BUCKETS; b++) {
        cr_assert_eq(landed(edge_ns[b]), b, "%llu ns", (unsigned long long)edge_ns[b]);
        cr_assert_eq(landed(edge_ns[b] + 1), b + 1, "%llu ns", (unsigned long long)edge_ns[b] + 1);
        cr_assert_eq(landed(edge_ns[b] - 1), b, "%llu ns", (unsigned long long)edge_ns[b] - 1);
    }
}

Test(latency, extremes)
{
    cr_assert_eq(landed(0), 0);
    cr_assert_eq(landed(1), 0);
    cr_assert_eq(landed(5000000001), LATENCY_BUCKETS); /* +Inf */
    cr_assert_eq(landed(3600ull * 1000000000), LATENCY_BUCKETS);
}

Test(latency, counts_per_bucket_and_sum)
{
    struct latency_hist h;
    memset(&h, 0, sizeof(h));
    const uint64_t obs[] = {40000, 100000, 100001, 3000000000, 10000000000, 40000};
    uint64_t sum = 0;
    for (size_t i = 0; i < sizeof(obs) / sizeof(obs[0]); i++) {
        latency_record(&h, obs[i]);
        sum += obs[i];
    }
    uint64_t want[LATENCY_BUCKETS + 1] = {0};
    want[0] = 2;               /* 40 us twice */
    want[1] = 1;               /* 100 us, on the edge */
    want[2] = 1;               /* 100.001 us */
    want[15] = 1;              /* 3 s: le=5 */
    want[LATENCY_BUCKETS] = 1; /* 10 s: +Inf */
    for (int b = 0; b <= LATENCY_BUCKETS; b++)
        cr_assert_eq(counter_get(&h.buckets[b]), want[b], "bucket %d", b);
    cr_assert_eq(counter_get(&h.sum_ns), sum);
    cr_assert_eq(sum, 13000280001ull);
}

/* The copy other threads read is exactly what was recorded, and independent of it after. */
Test(latency, read_copies_every_bucket_and_the_sum)
{
    struct latency_hist h;
    memset(&h, 0, sizeof(h));
    for (int b = 0; b <= LATENCY_BUCKETS; b++)
        counter_add(&h.buckets[b], (uint64_t)(b + 1) * 3);
    counter_add(&h.sum_ns, 123456789);
    struct latency_snapshot s;
    memset(&s, 0xff, sizeof(s));
    latency_read(&h, &s);
    for (int b = 0; b <= LATENCY_BUCKETS; b++)
        cr_assert_eq(s.buckets[b], (uint64_t)(b + 1) * 3, "bucket %d", b);
    cr_assert_eq(s.sum_ns, 123456789);
    latency_record(&h, 1);
    cr_assert_eq(s.buckets[0], 3, "a snapshot must not follow later records");
}
