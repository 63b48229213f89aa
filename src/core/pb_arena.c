#include "core/pb_arena.h"

#include <stdlib.h>

static void *arena_alloc(void *data, size_t size)
{
    struct pb_arena *a = data;
    size_t aligned = size == 0 ? 16 : (size + 15u) & ~(size_t)15u;
    if (aligned >= size && aligned <= a->cap - a->used) {
        void *p = a->buf + a->used;
        a->used += aligned;
        return p;
    }
    return malloc(size);
}

static void arena_free(void *data, void *p)
{
    struct pb_arena *a = data;
    uint8_t *b = p;
    if (b < a->buf || b >= a->buf + a->cap)
        free(p);
}

void pb_arena_init(struct pb_arena *a, void *buf, size_t cap)
{
    uintptr_t start = ((uintptr_t)buf + 15u) & ~(uintptr_t)15u;
    size_t skip = (size_t)(start - (uintptr_t)buf);
    a->allocator.alloc = arena_alloc;
    a->allocator.free = arena_free;
    a->allocator.allocator_data = a;
    a->buf = (uint8_t *)start;
    a->cap = cap > skip ? cap - skip : 0;
    a->used = 0;
}
