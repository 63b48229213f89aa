#include "net/window.h"

#include <assert.h>
#include <stdlib.h>

#include "core/request.h"

int window_init(struct window *w, uint32_t capacity)
{
    if (capacity > (1u << 30))
        return -1;
    uint32_t size = 1;
    while (size < capacity)
        size <<= 1;
    w->slots = calloc(size, sizeof(*w->slots));
    if (w->slots == NULL)
        return -1;
    w->mask = size - 1;
    w->head = w->tail = 0;
    return 0;
}

void window_destroy(struct window *w)
{
    if (w->slots == NULL)
        return;
    for (uint32_t i = 0; i <= w->mask; i++) {
        if (w->slots[i] != NULL) {
            request_reset(w->slots[i]);
            free(w->slots[i]);
        }
    }
    free(w->slots);
    w->slots = NULL;
}

void window_complete(struct window *w, struct pr_request *req)
{
    assert(req->seq - w->head < w->tail - w->head);
    assert(w->slots[req->seq & w->mask] == NULL);
    w->slots[req->seq & w->mask] = req;
}

struct pr_request *window_pop(struct window *w)
{
    if (w->head == w->tail)
        return NULL;
    struct pr_request **slot = &w->slots[w->head & w->mask];
    struct pr_request *req = *slot;
    if (req == NULL)
        return NULL;
    *slot = NULL;
    w->head++;
    return req;
}
