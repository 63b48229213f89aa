#include "core/ring.h"

#include <stdlib.h>

int ring_init(struct pr_ring *r, unsigned int capacity)
{
    unsigned int size = 2;
    while (size - 1 < capacity) {
        if (size > (1u << 30))
            return -1;
        size <<= 1;
    }
    r->slots = calloc(size, sizeof(*r->slots));
    if (r->slots == NULL)
        return -1;
    ck_ring_init(&r->ring, size);
    r->capacity = size - 1;
    return 0;
}

void ring_destroy(struct pr_ring *r)
{
    free(r->slots);
    r->slots = NULL;
}
