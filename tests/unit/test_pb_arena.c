/* core/pb_arena: protobuf-c allocator over a caller's buffer with a malloc fallback. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/pb_arena.h"
#include "leak.h"
#include "presence.pb-c.h"

static bool inside(const struct pb_arena *a, const void *p)
{
    const uint8_t *b = p;
    return b >= a->buf && b < a->buf + a->cap;
}

Test(pb_arena, small_from_buffer_big_from_malloc)
{
    _Alignas(16) uint8_t buf[256];
    struct pb_arena a;
    pb_arena_init(&a, buf, sizeof(buf));
    ProtobufCAllocator *al = &a.allocator;

    void *p1 = al->alloc(al->allocator_data, 10);
    void *p2 = al->alloc(al->allocator_data, 33);
    cr_assert(inside(&a, p1));
    cr_assert(inside(&a, p2));
    cr_assert_eq((uintptr_t)p1 % 16, 0);
    cr_assert_eq((uintptr_t)p2 % 16, 0);
    cr_assert_geq((uint8_t *)p2 - (uint8_t *)p1, 10, "allocations overlap");
    memset(p1, 1, 10);
    memset(p2, 2, 33);

    void *big = al->alloc(al->allocator_data, 1000);
    cr_assert_not_null(big);
    cr_assert_not(inside(&a, big), "1000 bytes cannot come from a 256-byte buffer");
    memset(big, 3, 1000);

    al->free(al->allocator_data, p1); /* no-op */
    al->free(al->allocator_data, p2);
    al->free(al->allocator_data, big); /* a real free: ASan reports a leak otherwise */
    cr_assert_eq(((uint8_t *)p1)[0], 1, "buffer memory is not released piecemeal");
    expect_no_leaks();
}

Test(pb_arena, exhaustion_falls_back)
{
    _Alignas(16) uint8_t buf[128];
    struct pb_arena a;
    pb_arena_init(&a, buf, sizeof(buf));
    ProtobufCAllocator *al = &a.allocator;
    void *ptrs[16];
    int in_buf = 0;
    for (int i = 0; i < 16; i++) {
        ptrs[i] = al->alloc(al->allocator_data, 16);
        cr_assert_not_null(ptrs[i]);
        memset(ptrs[i], i, 16);
        in_buf += inside(&a, ptrs[i]);
    }
    cr_assert_eq(in_buf, 8, "128 bytes hold eight 16-byte blocks");
    cr_assert_leq(a.used, a.cap);
    for (int i = 0; i < 16; i++)
        al->free(al->allocator_data, ptrs[i]);
    expect_no_leaks();
}

Test(pb_arena, unaligned_buffer)
{
    _Alignas(16) uint8_t storage[100];
    struct pb_arena a;
    pb_arena_init(&a, storage + 3, sizeof(storage) - 3);
    cr_assert_eq((uintptr_t)a.buf % 16, 0);
    cr_assert_geq(a.buf, storage + 3);
    cr_assert_leq(a.buf + a.cap, storage + sizeof(storage));
    ProtobufCAllocator *al = &a.allocator;
    void *p = al->alloc(al->allocator_data, 8);
    cr_assert(inside(&a, p));
    cr_assert_eq((uintptr_t)p % 16, 0);

    /* A buffer smaller than the alignment skip: everything comes from malloc. */
    pb_arena_init(&a, storage + 1, 4);
    cr_assert_eq(a.cap, 0);
    void *q = al->alloc(al->allocator_data, 1);
    cr_assert_not_null(q);
    al->free(al->allocator_data, q);
    expect_no_leaks();
}

/* Decoding through the arena: the message struct fits the buffer, a big bytes field does not;
 * free_unpacked gives the malloc'd part back (ASan leak check). */
Test(pb_arena, decode_big_bytes_field)
{
    size_t big_len = 100000;
    uint8_t *payload = malloc(big_len);
    for (size_t i = 0; i < big_len; i++)
        payload[i] = (uint8_t)(i * 31);
    Mpim__DeliverReq in = MPIM__DELIVER_REQ__INIT;
    in.user_id = 99;
    in.message.data = payload;
    in.message.len = big_len;
    in.message_type.data = (uint8_t *)"bin";
    in.message_type.len = 3;
    size_t n = mpim__deliver_req__get_packed_size(&in);
    uint8_t *wire = malloc(n);
    mpim__deliver_req__pack(&in, wire);

    _Alignas(16) uint8_t buf[256];
    struct pb_arena a;
    pb_arena_init(&a, buf, sizeof(buf));
    Mpim__DeliverReq *out = mpim__deliver_req__unpack(&a.allocator, n, wire);
    cr_assert_not_null(out);
    cr_assert(inside(&a, out), "the message struct comes from the buffer");
    cr_assert(inside(&a, out->message_type.data));
    cr_assert_not(inside(&a, out->message.data), "the 100 KB field falls back to malloc");
    cr_assert_eq(out->user_id, 99);
    cr_assert_eq(out->message.len, big_len);
    cr_assert_eq(memcmp(out->message.data, payload, big_len), 0);
    cr_assert_eq(out->message_type.len, 3);
    mpim__deliver_req__free_unpacked(out, &a.allocator);

    /* The arena can be reset and reused. */
    pb_arena_init(&a, buf, sizeof(buf));
    out = mpim__deliver_req__unpack(&a.allocator, n, wire);
    cr_assert_not_null(out);
    mpim__deliver_req__free_unpacked(out, &a.allocator);

    /* A truncated message fails cleanly, freeing what it had allocated. */
    pb_arena_init(&a, buf, sizeof(buf));
    cr_assert_null(mpim__deliver_req__unpack(&a.allocator, n - 1, wire));

    free(wire);
    free(payload);
    expect_no_leaks();
}
