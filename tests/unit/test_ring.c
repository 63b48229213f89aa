/* core/ring: the SPSC pointer ring between the acceptor and a shard. */
#include <criterion/criterion.h>

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/ring.h"
#include "leak.h"

#define TAG(i) ((void *)(uintptr_t)((i) + 1)) /* never NULL: NULL means empty */

Test(ring, capacity_rounds_up)
{
    const unsigned int asked[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 100, 1000, 1023, 1024, 1025};
    for (size_t i = 0; i < sizeof(asked) / sizeof(asked[0]); i++) {
        struct pr_ring r;
        cr_assert_eq(ring_init(&r, asked[i]), 0);
        cr_assert_geq(r.capacity, asked[i], "asked %u got %u", asked[i], r.capacity);
        cr_assert_geq(r.capacity, 1);
        cr_assert_leq(r.capacity, 2 * asked[i] + 1, "asked %u got %u: not rounded tightly", asked[i],
                      r.capacity);
        /* Exactly `capacity` pointers fit. */
        unsigned int pushed = 0;
        while (ring_push(&r, TAG(pushed)))
            pushed++;
        cr_assert_eq(pushed, r.capacity, "asked %u", asked[i]);
        ring_destroy(&r);
        cr_assert_null(r.slots);
    }
    expect_no_leaks();
}

Test(ring, full_push_fails_and_fifo_pop)
{
    struct pr_ring r;
    cr_assert_eq(ring_init(&r, 5), 0);
    unsigned int cap = r.capacity;
    for (unsigned int i = 0; i < cap; i++)
        cr_assert(ring_push(&r, TAG(i)));
    /* Full: the push fails and the object stays ours to free. */
    int *mine = malloc(sizeof(*mine));
    cr_assert_not(ring_push(&r, mine));
    free(mine);
    for (unsigned int i = 0; i < cap; i++)
        cr_assert_eq(ring_pop(&r), TAG(i), "pop %u", i);
    cr_assert_null(ring_pop(&r));
    cr_assert_null(ring_pop(&r));
    /* Usable again after draining. */
    cr_assert(ring_push(&r, TAG(42)));
    cr_assert_eq(ring_pop(&r), TAG(42));
    ring_destroy(&r);
    expect_no_leaks();
}

Test(ring, empty_pop_is_null)
{
    struct pr_ring r;
    cr_assert_eq(ring_init(&r, 16), 0);
    cr_assert_null(ring_pop(&r));
    ring_destroy(&r);
    expect_no_leaks();
}

Test(ring, wraps_around_many_times)
{
    struct pr_ring r;
    cr_assert_eq(ring_init(&r, 3), 0);
    uintptr_t next_in = 0, next_out = 0;
    for (int round = 0; round < 10000; round++) {
        int k = round % 4;
        for (int i = 0; i < k && ring_push(&r, TAG(next_in)); i++)
            next_in++;
        for (int i = 0; i < (round % 3); i++) {
            void *p = ring_pop(&r);
            if (p == NULL) {
                cr_assert_eq(next_out, next_in);
                break;
            }
            cr_assert_eq(p, TAG(next_out));
            next_out++;
        }
    }
    void *p;
    while ((p = ring_pop(&r)) != NULL)
        cr_assert_eq(p, TAG(next_out++));
    cr_assert_eq(next_out, next_in);
    cr_assert_gt(next_in, 1000u);
    ring_destroy(&r);
    expect_no_leaks();
}

/* ring_depth: what the shard_inbox_depth gauge shows. */
Test(ring, depth_counts_what_waits)
{
    struct pr_ring r;
    cr_assert_eq(ring_init(&r, 4), 0);
    cr_assert_eq(ring_depth(&r), 0);
    for (unsigned int i = 0; i < r.capacity; i++) {
        cr_assert(ring_push(&r, TAG(i)));
        cr_assert_eq(ring_depth(&r), i + 1);
    }
    cr_assert_not(ring_push(&r, TAG(99)));
    cr_assert_eq(ring_depth(&r), r.capacity, "a failed push must not count");
    cr_assert_eq(ring_pop(&r), TAG(0));
    cr_assert_eq(ring_depth(&r), r.capacity - 1);
    while (ring_pop(&r) != NULL)
        ;
    cr_assert_eq(ring_depth(&r), 0);
    ring_destroy(&r);
}

/* ---- two threads ----
 *
 * The scenarios are plain functions (no Criterion calls: the producer is another thread), so
 * that the TSan build can run them too: Criterion's runner cannot start under ThreadSanitizer
 * (its BoxFort arena maps memory at random fixed addresses that TSan reserves; Criterion issue
 * #274), so in that build this file supplies main() and runs them directly. */

#define N_ITEMS 1000000u

struct pass {
    struct pr_ring ring;
    unsigned int count;
    int objects;            /* pass malloc'd objects instead of tagged integers */
    unsigned int full_seen; /* producer only */
};

struct payload {
    unsigned int seq;
    unsigned int check; /* written by the producer before the push */
};

static void *producer(void *arg)
{
    struct pass *ps = arg;
    for (unsigned int i = 0; i < ps->count; i++) {
        void *p = TAG(i);
        if (ps->objects) {
            struct payload *o = malloc(sizeof(*o));
            if (o == NULL)
                abort();
            o->seq = i;
            o->check = i * 2654435761u;
            p = o;
        }
        while (!ring_push(&ps->ring, p)) {
            ps->full_seen++;
            sched_yield();
        }
    }
    return NULL;
}

/* Pass `count` items producer -> consumer through a ring of `capacity`. NULL or what failed. */
static const char *ring_pass(unsigned int capacity, unsigned int count, int objects)
{
    static char why[128];
    struct pass ps = {.count = count, .objects = objects};
    if (ring_init(&ps.ring, capacity) != 0)
        return "ring_init failed";
    pthread_t t;
    if (pthread_create(&t, NULL, producer, &ps) != 0)
        return "pthread_create failed";
    unsigned int got = 0;
    const char *err = NULL;
    while (got < count) {
        void *p = ring_pop(&ps.ring);
        if (p == NULL) {
            sched_yield();
            continue;
        }
        if (objects) {
            struct payload *o = p;
            if (err == NULL && (o->seq != got || o->check != got * 2654435761u)) {
                snprintf(why, sizeof(why), "item %u arrived as %u (check %u)", got, o->seq, o->check);
                err = why;
            }
            free(o);
        } else if (err == NULL && p != TAG(got)) {
            snprintf(why, sizeof(why), "item %u arrived as %lu", got, (unsigned long)(uintptr_t)p - 1);
            err = why;
        }
        got++;
    }
    pthread_join(t, NULL);
    if (err == NULL && ring_pop(&ps.ring) != NULL)
        err = "more items came out than went in";
    if (err == NULL && capacity < 100 && ps.full_seen == 0)
        err = "the ring never filled up: the test did not exercise a full ring";
    ring_destroy(&ps.ring);
    return err;
}

#ifndef PR_RING_TSAN

Test(ring, two_threads_million_in_order, .timeout = 120)
{
    const char *err = ring_pass(64, N_ITEMS, 0);
    cr_assert_null(err, "%s", err);
    expect_no_leaks();
}

/* The consumer reads what the producer wrote into the object before pushing it: the hand-off
 * the shards rely on. */
Test(ring, two_threads_hand_off_objects, .timeout = 120)
{
    const char *err = ring_pass(8, 200000, 1);
    cr_assert_null(err, "%s", err);
    expect_no_leaks();
}

/* The smallest ring: every push waits for the previous pop. */
Test(ring, two_threads_capacity_1, .timeout = 120)
{
    const char *err = ring_pass(1, 100000, 1);
    cr_assert_null(err, "%s", err);
    expect_no_leaks();
}

#else

/* ThreadSanitizer build: run the two-thread scenarios without Criterion. TSan reports any race
 * and makes the exit status 66; a wrong order or count prints and exits 1. */
int main(void)
{
    struct {
        const char *name;
        unsigned int capacity, count;
        int objects;
    } runs[] = {
        {"ring::two_threads_million_in_order", 64, N_ITEMS, 0},
        {"ring::two_threads_hand_off_objects", 8, 200000, 1},
        {"ring::two_threads_capacity_1", 1, 100000, 1},
    };
    int failed = 0;
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
        const char *err = ring_pass(runs[i].capacity, runs[i].count, runs[i].objects);
        printf("[%s] %s%s%s\n", err ? "FAIL" : "PASS", runs[i].name, err ? ": " : "", err ? err : "");
        failed += err != NULL;
    }
    printf("TSan build: Criterion cannot run under ThreadSanitizer; ran the %zu ring thread "
           "tests only.\n",
           sizeof(runs) / sizeof(runs[0]));
    return failed ? 1 : 0;
}

#endif
