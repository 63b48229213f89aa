/* A small mergeable log-linear latency histogram (HdrHistogram's layout, fixed precision).
 *
 * Values are nanoseconds. Below 256 every value has its own bucket; above, each power of two
 * is split into 128 linear sub-buckets, so a recorded value is known to within 1/128 (< 0.8 %)
 * of itself. Values from 2^40 ns (~18 min) up land in the last bucket; max is kept exactly.
 * Fixed size (~35 KiB), no allocation: one per thread, merged (added) at the end. */
#ifndef BENCH_HISTOGRAM_H
#define BENCH_HISTOGRAM_H

#include <stdint.h>

#define HIST_SUB_BITS 7u                                   /* 128 sub-buckets per octave */
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_BITS 40u                                  /* values < 2^40 ns are exact-ish */
#define HIST_BUCKETS (2u * HIST_SUB + (HIST_MAX_BITS - HIST_SUB_BITS - 1u) * HIST_SUB)

struct histogram {
    uint64_t count;               /* values recorded */
    uint64_t min;                 /* smallest value recorded (UINT64_MAX when empty) */
    uint64_t max;                 /* largest value recorded, exact */
    double sum;                   /* sum of values, for the mean */
    uint64_t counts[HIST_BUCKETS]; /* per-bucket counts */
};

void hist_init(struct histogram *h);
void hist_record(struct histogram *h, uint64_t value);
/* dst += src. */
void hist_merge(struct histogram *dst, const struct histogram *src);
/* The value at percentile p (0..100): the highest value equivalent to the bucket holding the
 * ceil(p% x count)-th smallest value, capped at max. 0 when empty. */
uint64_t hist_percentile(const struct histogram *h, double p);
double hist_mean(const struct histogram *h);

/* Bucket arithmetic, exposed for the self-check. */
uint32_t hist_index(uint64_t value);
uint64_t hist_lowest(uint32_t index);  /* smallest value mapping to index */
uint64_t hist_highest(uint32_t index); /* largest value mapping to index */

#endif
