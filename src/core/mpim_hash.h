/* MPIM's gateway channel (issue #12, contract §9): MPIM's gateways subscribe to the decimal string
 * of 10000 + std::hash<std::string>{}(gateway_id) % 50000, computed by libstdc++ on 64-bit. Pure,
 * any thread.
 *
 * libstdc++'s std::hash<std::string> is _Hash_bytes(data, len, 0xc70f6907): a MurmurHash2-style
 * 64-bit mix (multiplier 0xc6a4a7935bd1e995, shift 47), whole 8-byte words read little-endian,
 * the 1-7 byte tail folded in as one little-endian word. Written here from that description;
 * tests/unit/test_mpim_hash.c checks it against values g++ computes in the test build. */
#ifndef PR_CORE_MPIM_HASH_H
#define PR_CORE_MPIM_HASH_H

#include <stddef.h>
#include <stdint.h>

/* std::hash<std::string> of len bytes, as libstdc++ computes it on a 64-bit target. */
uint64_t mpim_std_hash(const void *buf, size_t len);

/* MPIM's channel number for a gateway id: 10000 + mpim_std_hash(id) % 50000. */
unsigned mpim_gateway_channel(const void *gateway_id, size_t len);

#endif
