/* A protobuf-c allocator that carves from a caller's buffer and falls back to malloc when the
 * buffer is used up, so decoding a small message costs no malloc. Single-owner: one thread. */
#ifndef PR_CORE_PB_ARENA_H
#define PR_CORE_PB_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

struct pb_arena {
    ProtobufCAllocator allocator; /* pass &arena->allocator to protobuf-c */
    uint8_t *buf;                 /* caller's storage */
    size_t cap;                   /* its size */
    size_t used;                  /* bytes carved so far */
};

void pb_arena_init(struct pb_arena *a, void *buf, size_t cap);

#endif
