/* The per-connection reorder window (twemproxy's ordered request queue). Acceptor thread only.
 *
 * Each request read from a connection takes the next sequence number. Answers may come back
 * from the shards in any order; window_complete parks them in their slot, and window_pop hands
 * them out strictly in sequence, so responses leave in request order. The capacity bounds how
 * many requests one connection may have outstanding: when full, the acceptor stops reading that
 * socket until the head is answered (backpressure, nothing dropped). */
#ifndef PR_NET_WINDOW_H
#define PR_NET_WINDOW_H

#include <stdbool.h>
#include <stdint.h>

struct pr_request;

struct window {
    struct pr_request **slots; /* answered requests parked by seq & mask; NULL = not yet */
    uint32_t mask;             /* capacity - 1 (capacity is a power of two) */
    uint32_t head;             /* oldest outstanding seq: the next response to send */
    uint32_t tail;             /* next seq to hand out */
};

/* Room for at least `capacity` outstanding requests. 0 or -1 (ENOMEM). */
int window_init(struct window *w, uint32_t capacity);
/* Free the slots array and any parked answers (request_reset + free). */
void window_destroy(struct window *w);

static inline uint32_t window_outstanding(const struct window *w)
{
    return w->tail - w->head;
}

static inline bool window_full(const struct window *w)
{
    return window_outstanding(w) > w->mask;
}

/* The next sequence number; the caller checked !window_full. */
static inline uint32_t window_reserve(struct window *w)
{
    return w->tail++;
}

/* Park an answered request (req->seq must be outstanding and not yet answered). */
void window_complete(struct window *w, struct pr_request *req);

/* The answered request at the head, removing it, or NULL while the head is still out. */
struct pr_request *window_pop(struct window *w);

#endif
