#include "histogram.h"

#include <math.h>
#include <string.h>

void hist_init(struct histogram *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

uint32_t hist_index(uint64_t value)
{
    if (value < 2u * HIST_SUB)
        return (uint32_t)value;
    if (value >> HIST_MAX_BITS)
        return HIST_BUCKETS - 1u;
    unsigned msb = 63u - (unsigned)__builtin_clzll(value);
    unsigned shift = msb - HIST_SUB_BITS; /* >= 1 */
    uint64_t top = value >> shift;        /* in [HIST_SUB, 2 * HIST_SUB) */
    return 2u * HIST_SUB + (shift - 1u) * HIST_SUB + (uint32_t)(top - HIST_SUB);
}

uint64_t hist_lowest(uint32_t index)
{
    if (index < 2u * HIST_SUB)
        return index;
    uint32_t rel = index - 2u * HIST_SUB;
    unsigned shift = rel / HIST_SUB + 1u;
    uint64_t top = HIST_SUB + rel % HIST_SUB;
    return top << shift;
}

uint64_t hist_highest(uint32_t index)
{
    if (index + 1u >= HIST_BUCKETS)
        return UINT64_MAX;
    return hist_lowest(index + 1u) - 1u;
}

void hist_record(struct histogram *h, uint64_t value)
{
    h->counts[hist_index(value)]++;
    h->count++;
    h->sum += (double)value;
    if (value < h->min)
        h->min = value;
    if (value > h->max)
        h->max = value;
}

void hist_merge(struct histogram *dst, const struct histogram *src)
{
    for (uint32_t i = 0; i < HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->count += src->count;
    dst->sum += src->sum;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_percentile(const struct histogram *h, double p)
{
    if (h->count == 0)
        return 0;
    if (p >= 100.0)
        return h->max;
    double want = ceil(p / 100.0 * (double)h->count);
    uint64_t rank = want < 1.0 ? 1u : (uint64_t)want;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_highest(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max;
}

double hist_mean(const struct histogram *h)
{
    return h->count == 0 ? 0.0 : h->sum / (double)h->count;
}
