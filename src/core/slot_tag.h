/* A short hash tag for every Redis Cluster slot: the smallest decimal number whose CRC16 lands in
 * that slot. A key "...{<tag>}..." then lives in that slot whatever else it holds, so a per-slot
 * key can be named for any slot (contract §8: a gateway's session index is kept per slot, next to
 * the users it lists, so that the user's session script updates it atomically).
 *
 * The table is computed once (every number from 0 up until each slot has one: 109,758 numbers,
 * at most 6 digits, about a millisecond) and read-only after: any thread. Every instance computes
 * the same table, so they all name a slot's keys alike. */
#ifndef PR_CORE_SLOT_TAG_H
#define PR_CORE_SLOT_TAG_H

#include <stddef.h>
#include <stdint.h>

/* Longest tag in decimal digits, and a buffer that holds one with its NUL. */
#define SLOT_TAG_MAX 6
#define SLOT_TAG_BUF (SLOT_TAG_MAX + 1)

/* Build the table if not built yet (thread-safe; call it at start-up, before the threads). */
void slot_tags_init(void);

/* The tag of slot (< 16384) as a number, and as decimal text in buf (SLOT_TAG_BUF bytes); returns
 * its length. slot_tags_init must have run. */
uint32_t slot_tag(uint16_t slot);
size_t slot_tag_text(uint16_t slot, char *buf);

#endif
