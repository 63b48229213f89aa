/* net/window: the per-connection reorder window. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/request.h"
#include "leak.h"
#include "net/window.h"

static struct pr_request *new_req(uint32_t seq)
{
    struct pr_request *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    r->seq = seq;
    return r;
}

Test(window, in_order)
{
    struct window w;
    cr_assert_eq(window_init(&w, 4), 0);
    cr_assert_null(window_pop(&w), "empty window");
    for (uint32_t i = 0; i < 4; i++) {
        uint32_t s = window_reserve(&w);
        cr_assert_eq(s, i);
        cr_assert_eq(window_outstanding(&w), 1);
        cr_assert_null(window_pop(&w), "head not answered yet");
        window_complete(&w, new_req(s));
        struct pr_request *r = window_pop(&w);
        cr_assert_not_null(r);
        cr_assert_eq(r->seq, s);
        cr_assert_eq(window_outstanding(&w), 0);
        free(r);
    }
    window_destroy(&w);
    cr_assert_null(w.slots);
    window_destroy(&w); /* twice is harmless */
    expect_no_leaks();
}

Test(window, out_of_order_completion)
{
    struct window w;
    cr_assert_eq(window_init(&w, 8), 0);
    uint32_t s0 = window_reserve(&w), s1 = window_reserve(&w), s2 = window_reserve(&w);
    window_complete(&w, new_req(s2));
    cr_assert_null(window_pop(&w), "2 done, 0 not: nothing may leave");
    window_complete(&w, new_req(s1));
    cr_assert_null(window_pop(&w), "1 and 2 done, 0 not: nothing may leave");
    cr_assert_eq(window_outstanding(&w), 3);
    window_complete(&w, new_req(s0));
    for (uint32_t want = 0; want < 3; want++) {
        struct pr_request *r = window_pop(&w);
        cr_assert_not_null(r, "pop %u", want);
        cr_assert_eq(r->seq, want);
        free(r);
    }
    cr_assert_null(window_pop(&w));
    cr_assert_eq(window_outstanding(&w), 0);
    window_destroy(&w);
    expect_no_leaks();
}

Test(window, interleaved_gaps)
{
    struct window w;
    cr_assert_eq(window_init(&w, 16), 0);
    for (int i = 0; i < 10; i++)
        window_reserve(&w);
    const uint32_t order[] = {3, 1, 0, 2, 9, 5, 4, 8, 6, 7};
    const int pops_after[] = {0, 0, 2, 2, 0, 0, 2, 0, 1, 3}; /* how many leave after each */
    uint32_t next = 0;
    for (int i = 0; i < 10; i++) {
        window_complete(&w, new_req(order[i]));
        int popped = 0;
        struct pr_request *r;
        while ((r = window_pop(&w)) != NULL) {
            cr_assert_eq(r->seq, next++);
            free(r);
            popped++;
        }
        cr_assert_eq(popped, pops_after[i], "after completing %u: %d left", order[i], popped);
    }
    cr_assert_eq(next, 10);
    window_destroy(&w);
    expect_no_leaks();
}

Test(window, full_at_capacity)
{
    const uint32_t asked[] = {0, 1, 3, 5, 8, 1000};
    for (size_t k = 0; k < sizeof(asked) / sizeof(asked[0]); k++) {
        struct window w;
        cr_assert_eq(window_init(&w, asked[k]), 0);
        uint32_t cap = w.mask + 1;
        cr_assert_eq(cap & (cap - 1), 0, "capacity %u is not a power of two", cap);
        cr_assert_geq(cap, asked[k]);
        cr_assert(cap < 2 * asked[k] || cap == 1, "asked %u got %u", asked[k], cap);
        for (uint32_t i = 0; i < cap; i++) {
            cr_assert_not(window_full(&w), "full after %u of %u", i, cap);
            window_reserve(&w);
        }
        cr_assert(window_full(&w));
        cr_assert_eq(window_outstanding(&w), cap);
        /* Answering the newest does not free room; answering the head does. */
        if (cap > 1) {
            window_complete(&w, new_req(cap - 1));
            cr_assert(window_full(&w));
        }
        window_complete(&w, new_req(0));
        struct pr_request *r = window_pop(&w);
        cr_assert_not_null(r);
        free(r);
        cr_assert_not(window_full(&w));
        cr_assert_eq(window_reserve(&w), cap);
        cr_assert(window_full(&w));
        window_destroy(&w); /* frees the parked answer to cap - 1 */
    }
    expect_no_leaks();
}

Test(window, wraps_around_uint32)
{
    struct window w;
    cr_assert_eq(window_init(&w, 4), 0);
    w.head = w.tail = UINT32_MAX - 2;
    uint32_t seqs[4];
    for (int i = 0; i < 4; i++)
        seqs[i] = window_reserve(&w);
    cr_assert_eq(seqs[0], UINT32_MAX - 2);
    cr_assert_eq(seqs[3], 0, "the sequence wraps");
    cr_assert_eq(window_outstanding(&w), 4);
    cr_assert(window_full(&w));
    window_complete(&w, new_req(seqs[3]));
    window_complete(&w, new_req(seqs[1]));
    cr_assert_null(window_pop(&w));
    window_complete(&w, new_req(seqs[0]));
    window_complete(&w, new_req(seqs[2]));
    for (int i = 0; i < 4; i++) {
        struct pr_request *r = window_pop(&w);
        cr_assert_not_null(r, "pop %d", i);
        cr_assert_eq(r->seq, seqs[i]);
        free(r);
    }
    cr_assert_null(window_pop(&w));
    cr_assert_eq(w.head, 1);
    cr_assert_eq(window_outstanding(&w), 0);
    /* And keeps going past the wrap. */
    uint32_t s = window_reserve(&w);
    cr_assert_eq(s, 1);
    window_complete(&w, new_req(s));
    struct pr_request *r = window_pop(&w);
    cr_assert_eq(r->seq, 1);
    free(r);
    window_destroy(&w);
    expect_no_leaks();
}

/* Parked answers and everything they own are released with the window (ASan: no leaks). */
Test(window, destroy_frees_parked_requests)
{
    struct window w;
    cr_assert_eq(window_init(&w, 8), 0);
    for (int i = 0; i < 6; i++)
        window_reserve(&w);
    for (uint32_t s = 1; s < 6; s++) { /* head (0) never answered: all stay parked */
        struct pr_request *r = new_req(s);
        r->route = strdup("gw:1");
        r->route_len = 4;
        window_complete(&w, r);
    }
    cr_assert_null(window_pop(&w));
    window_destroy(&w);
    cr_assert_null(w.slots);
    expect_no_leaks();
}
