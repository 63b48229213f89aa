/* core/hash: user_id -> shard. */
#include <criterion/criterion.h>

#include <stdint.h>

#include "core/hash.h"

static const int64_t extremes[] = {0,
                                   1,
                                   -1,
                                   2,
                                   -2,
                                   7,
                                   8,
                                   1000,
                                   INT64_MAX,
                                   INT64_MIN,
                                   INT64_MAX - 1,
                                   INT64_MIN + 1,
                                   (int64_t)1 << 32,
                                   ((int64_t)1 << 32) - 1,
                                   -((int64_t)1 << 32),
                                   0x5555555555555555,
                                   (int64_t)0xAAAAAAAAAAAAAAAAULL};

Test(hash, always_in_range)
{
    for (uint32_t n = 1; n <= 64; n++) {
        for (size_t i = 0; i < sizeof(extremes) / sizeof(extremes[0]); i++)
            cr_assert_lt(hash_shard(extremes[i], n), n, "id %lld n %u", (long long)extremes[i], n);
        for (int64_t id = -5000; id < 5000; id++)
            cr_assert_lt(hash_shard(id, n), n);
        uint64_t x = 0x9e3779b97f4a7c15ULL; /* a cheap spread of 64-bit ids */
        for (int i = 0; i < 5000; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            cr_assert_lt(hash_shard((int64_t)x, n), n);
        }
    }
    cr_assert_eq(hash_shard(INT64_MAX, 1), 0);
    cr_assert_eq(hash_shard(12345, 1), 0);
    cr_assert_lt(hash_shard(INT64_MIN, UINT32_MAX), UINT32_MAX);
}

Test(hash, deterministic)
{
    for (int64_t id = 1; id < 10000; id += 37) {
        uint32_t a = hash_shard(id, 8);
        for (int k = 0; k < 3; k++)
            cr_assert_eq(hash_shard(id, 8), a);
        cr_assert_eq(hash_mix64((uint64_t)id), hash_mix64((uint64_t)id));
    }
    /* fmix64 of murmur3 (pinned): a change would silently move users between shards. */
    cr_assert_eq(hash_mix64(0), 0);
    cr_assert_eq(hash_mix64(1), 0xb456bcfc34c2cb2cULL);
}

static void check_spread(int64_t start, int64_t stride, uint32_t n, int count, double tolerance)
{
    int buckets[64] = {0};
    for (int i = 0; i < count; i++)
        buckets[hash_shard(start + stride * i, n)]++;
    double expect = (double)count / n;
    for (uint32_t s = 0; s < n; s++)
        cr_assert(buckets[s] >= expect * (1 - tolerance) && buckets[s] <= expect * (1 + tolerance),
                  "stride %lld n %u: shard %u got %d of %d (expected %.0f)", (long long)stride, n, s,
                  buckets[s], count, expect);
}

Test(hash, sequential_ids_spread_evenly)
{
    check_spread(1, 1, 8, 100000, 0.10);
    check_spread(1000000000, 1, 8, 100000, 0.10);
    check_spread(1, 1, 7, 100000, 0.10);
    check_spread(1, 1, 64, 640000, 0.10);
}

Test(hash, strided_ids_spread_evenly)
{
    check_spread(8, 8, 8, 100000, 0.10); /* multiples of the shard count */
    check_spread(0, 64, 8, 100000, 0.10);
    check_spread(1, 1024, 8, 100000, 0.10);
    check_spread(0, (int64_t)1 << 32, 8, 100000, 0.10); /* only the high half varies */
}
