/* Any thread. */
#include "core/mpim_hash.h"

#define MPIM_HASH_SEED 0xc70f6907u
#define MUL 0xc6a4a7935bd1e995ull

static uint64_t shift_mix(uint64_t v)
{
    return v ^ (v >> 47);
}

/* n (1-8) bytes as a little-endian number, whatever the host's byte order. */
static uint64_t load_le(const unsigned char *p, size_t n)
{
    uint64_t v = 0;
    while (n-- > 0)
        v = v << 8 | p[n];
    return v;
}

uint64_t mpim_std_hash(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t hash = MPIM_HASH_SEED ^ (len * MUL);
    size_t words = len / 8;
    for (size_t i = 0; i < words; i++, p += 8) {
        hash ^= shift_mix(load_le(p, 8) * MUL) * MUL;
        hash *= MUL;
    }
    if (len % 8 != 0) {
        hash ^= load_le(p, len % 8);
        hash *= MUL;
    }
    hash = shift_mix(hash) * MUL;
    return shift_mix(hash);
}

unsigned mpim_gateway_channel(const void *gateway_id, size_t len)
{
    return 10000u + (unsigned)(mpim_std_hash(gateway_id, len) % 50000u);
}
