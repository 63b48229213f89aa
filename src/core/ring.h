/* A single-producer/single-consumer pointer ring (Concurrency Kit's ck_ring), shared between
 * exactly two threads: push only from the producer, pop only from the consumer.
 *
 * A pointer pushed successfully belongs to the consumer; a failed push leaves it with the
 * producer, who must answer or retry (nng's rule for messages: on success the callee owns it,
 * on error the caller keeps it).
 *
 * ck_ring publishes with its own fences written in inline assembly, which ThreadSanitizer cannot
 * see; under TSan we state the same release/acquire edge explicitly so that the hand-off of the
 * pointed-to object is understood. Normal builds compile to ck_ring alone. */
#ifndef PR_CORE_RING_H
#define PR_CORE_RING_H

#include <stdbool.h>
#include <stddef.h>

#include <ck_ring.h>

#if defined(__SANITIZE_THREAD__)
#define PR_RING_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PR_RING_TSAN 1
#endif
#endif

#ifdef PR_RING_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
void AnnotateIgnoreWritesBegin(const char *file, int line);
void AnnotateIgnoreWritesEnd(const char *file, int line);
#endif

struct pr_ring {
    ck_ring_t ring;            /* indices; ck keeps producer and consumer on separate lines */
    ck_ring_buffer_t *slots;   /* capacity + 1 slots (ck keeps one empty) */
    unsigned int capacity;     /* how many pointers fit */
};

/* Capacity is rounded up so that at least `capacity` pointers fit. Returns 0 or -1 (ENOMEM). */
int ring_init(struct pr_ring *r, unsigned int capacity);
void ring_destroy(struct pr_ring *r);

/* Producer only. false when full: the pointer still belongs to the caller. */
static inline bool ring_push(struct pr_ring *r, void *p)
{
#ifdef PR_RING_TSAN
    __tsan_release(r);
    AnnotateIgnoreWritesBegin(__FILE__, __LINE__);
    bool ok = ck_ring_enqueue_spsc(&r->ring, r->slots, p);
    AnnotateIgnoreWritesEnd(__FILE__, __LINE__);
    return ok;
#else
    return ck_ring_enqueue_spsc(&r->ring, r->slots, p);
#endif
}

/* Any thread: pointers waiting now. A gauge for metrics, stale as soon as it is read. */
static inline unsigned int ring_depth(const struct pr_ring *r)
{
    return ck_ring_size(&r->ring);
}

/* Consumer only. NULL when empty. */
static inline void *ring_pop(struct pr_ring *r)
{
    void *p;
#ifdef PR_RING_TSAN
    AnnotateIgnoreReadsBegin(__FILE__, __LINE__);
    bool ok = ck_ring_dequeue_spsc(&r->ring, r->slots, &p);
    AnnotateIgnoreReadsEnd(__FILE__, __LINE__);
    if (!ok)
        return NULL;
#else
    if (!ck_ring_dequeue_spsc(&r->ring, r->slots, &p))
        return NULL;
#endif
#ifdef PR_RING_TSAN
    __tsan_acquire(r);
#endif
    return p;
}

#endif
