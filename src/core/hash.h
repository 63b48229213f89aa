/* user_id (or a gateway address) -> shard. Pure, any thread. */
#ifndef PR_CORE_HASH_H
#define PR_CORE_HASH_H

#include <stddef.h>
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

/* The shard of a call that names a gateway and no user (GatewayHeartbeat, DrainGateway): FNV-1a
 * of its bytes, mixed, so that one gateway's calls always run, in order, on one shard. */
static inline uint32_t hash_bytes_shard(const void *data, size_t len, uint32_t nshards)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    h = hash_mix64(h) >> 32;
    return (uint32_t)((h * nshards) >> 32);
}

#endif
