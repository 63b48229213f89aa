/* Counters with one writer thread and any number of readers (metrics, Stats).
 *
 * The writer updates with a relaxed load + store, not an atomic add: on x86-64 that is a plain
 * mov, no locked instruction and no cache-line ping-pong, because no other thread ever writes.
 * Readers see a recent value, never a torn one. Each counter must have exactly one writer. */
#ifndef PR_CORE_COUNTER_H
#define PR_CORE_COUNTER_H

#include <stdatomic.h>
#include <stdint.h>

typedef _Atomic uint64_t counter_t;

/* Writer thread only. */
static inline void counter_add(counter_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}

static inline void counter_set(counter_t *c, uint64_t v)
{
    atomic_store_explicit(c, v, memory_order_relaxed);
}

/* Any thread. */
static inline uint64_t counter_get(const counter_t *c)
{
    return atomic_load_explicit((counter_t *)c, memory_order_relaxed);
}

#endif
