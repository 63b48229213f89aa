/* Redis Cluster key -> slot (the cluster spec's "Keys distribution model"). Pure, any thread.
 *
 * A key's slot is CRC16(key) mod 16384, where CRC16 is CRC-16/XMODEM (poly 0x1021, init 0, no
 * reflection, no final xor; check value "123456789" -> 0x31C3). If the key has a hash tag -- a
 * '{' and, after it, a '}' with at least one byte between them -- only the bytes between the
 * FIRST '{' and the first '}' after it are hashed, so "{42}.a" and "{42}.b" share a slot. An
 * empty tag ("foo{}{bar}") means no tag: the whole key is hashed. */
#ifndef PR_CORE_CLUSTER_SLOT_H
#define PR_CORE_CLUSTER_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define CLUSTER_SLOTS 16384u

/* CRC-16/XMODEM of len bytes (buf may be NULL when len is 0). */
uint16_t cluster_crc16(const void *buf, size_t len);

/* The slot of a key of len bytes (binary-safe; key may be NULL when len is 0), in [0, 16383]. */
uint16_t cluster_keyslot(const char *key, size_t len);

#endif
