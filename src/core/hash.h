/* user_id -> shard. Pure, any thread. */
#ifndef PR_CORE_HASH_H
#define PR_CORE_HASH_H

#include <stdint.h>

/* A full-avalanche 64-bit mix (murmur3's fmix64), so sequential or strided ids spread evenly. */
static inline uint64_t hash_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

/* The shard that owns user_id, in [0, nshards). Multiply-shift instead of modulo: no division. */
static inline uint32_t hash_shard(int64_t user_id, uint32_t nshards)
{
    uint64_t h = hash_mix64((uint64_t)user_id) >> 32;
    return (uint32_t)((h * nshards) >> 32);
}

#endif
