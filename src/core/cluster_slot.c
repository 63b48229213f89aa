#include "core/cluster_slot.h"

#include <string.h>

/* The CRC is computed a nibble at a time from a 16-entry table that the compiler builds from the
 * polynomial: a constant table needs no run-time initialisation (so no once-guard on the request
 * path), and two lookups per byte cost little next to the Redis round trip. */
#define CRC16_POLY 0x1021u

/* One bit of the MSB-first shift register: shift left, fold the polynomial in if a 1 fell out. */
#define CRC16_BIT(c) ((((c) << 1) ^ ((((c) >> 15) & 1u) * CRC16_POLY)) & 0xffffu)
/* What a top nibble n contributes after four shifts: the register started as n << 12. */
#define CRC16_NIBBLE(n) ((uint16_t)CRC16_BIT(CRC16_BIT(CRC16_BIT(CRC16_BIT((uint32_t)(n) << 12)))))

static const uint16_t crc16_nibble[16] = {
    CRC16_NIBBLE(0),  CRC16_NIBBLE(1),  CRC16_NIBBLE(2),  CRC16_NIBBLE(3),
    CRC16_NIBBLE(4),  CRC16_NIBBLE(5),  CRC16_NIBBLE(6),  CRC16_NIBBLE(7),
    CRC16_NIBBLE(8),  CRC16_NIBBLE(9),  CRC16_NIBBLE(10), CRC16_NIBBLE(11),
    CRC16_NIBBLE(12), CRC16_NIBBLE(13), CRC16_NIBBLE(14), CRC16_NIBBLE(15),
};

uint16_t cluster_crc16(const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        crc = (uint16_t)(crc << 4) ^ crc16_nibble[crc >> 12];
        crc = (uint16_t)(crc << 4) ^ crc16_nibble[crc >> 12];
    }
    return crc;
}

uint16_t cluster_keyslot(const char *key, size_t len)
{
    /* len 0: memchr on a possibly NULL pointer would be undefined even with a zero length. */
    const char *open = len > 0 ? memchr(key, '{', len) : NULL;
    if (open != NULL) {
        size_t after = (size_t)(open - key) + 1;
        const char *close = memchr(open + 1, '}', len - after);
        if (close != NULL && close > open + 1)
            return cluster_crc16(open + 1, (size_t)(close - open - 1)) & (CLUSTER_SLOTS - 1);
    }
    return cluster_crc16(key, len) & (CLUSTER_SLOTS - 1);
}
