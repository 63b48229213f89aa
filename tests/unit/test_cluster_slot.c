/* core/cluster_slot: CRC16 and key -> slot, checked against a real Redis. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cluster_slot.h"

/* The plain bit-at-a-time CRC-16/XMODEM, straight from its definition, to check the table one. */
static uint16_t crc16_bitwise(const unsigned char *p, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)(p[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

Test(cluster_slot, crc16_check_value)
{
    /* The catalogue check value of CRC-16/XMODEM, also quoted by the Redis cluster spec. */
    cr_assert_eq(cluster_crc16("123456789", 9), 0x31C3);
    cr_assert_eq(cluster_crc16(NULL, 0), 0);
}

Test(cluster_slot, crc16_matches_the_bitwise_definition)
{
    unsigned char buf[300];
    srand(12345);
    for (int round = 0; round < 200; round++) {
        size_t len = (size_t)(rand() % (int)sizeof(buf));
        for (size_t i = 0; i < len; i++)
            buf[i] = (unsigned char)rand();
        cr_assert_eq(cluster_crc16(buf, len), crc16_bitwise(buf, len), "len %zu", len);
    }
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        cr_assert_eq(cluster_crc16(&c, 1), crc16_bitwise(&c, 1), "byte %d", b);
    }
}

/* Expected slots were obtained from a real Redis 7.0.15 (Debian 12) started as
 *   redis-server --port <free> --cluster-enabled yes --cluster-config-file /tmp/x/nodes.conf
 *                --save '' --appendonly no --dir /tmp/x
 * and asked CLUSTER KEYSLOT <key> for each key below (binary keys sent as raw RESP bulk strings). */
static const struct {
    const char *key;
    size_t len;
    uint16_t slot;
} redis_slots[] = {
#define K(s, slot)                                                                                           \
    {                                                                                                        \
        s, sizeof(s) - 1, slot                                                                               \
    }
    K("foo", 12182),
    K("bar", 5061),
    K("{user1000}.following", 3443),
    K("{user1000}.followers", 3443),
    K("foo{}{bar}", 8363),    /* empty first tag: the whole key */
    K("foo{{bar}}zap", 4015), /* tag is "{bar" */
    K("foo{bar}{zap}", 5061), /* first tag only: same as "bar" */
    K("user:route:{42}", 8000),
    K("user:status:{42}", 8000),
    K("user:{9007199254740993}", 15060),
    K("", 0),
    K("\x00\xff\x80{\x01}\xfe", 4129), /* a tag of one binary byte */
    K("\x00\xff\x80\x7f\r\n", 9400),
    K("{}", 15257),
    K("{", 4092),
    K("}", 12090),
    K("}{a}", 15495), /* a '}' before the '{' does not close anything */
    K("{a}", 15495),
    K("a", 15495),
    K("123456789", 12739),
    K("{abc", 444),
    K("abc}", 11054),
    K("x{}y", 16116),
    K("{{}}", 4092), /* tag is "{" */
#undef K
};

Test(cluster_slot, keyslot_matches_real_redis)
{
    for (size_t i = 0; i < sizeof(redis_slots) / sizeof(redis_slots[0]); i++) {
        /* An exact-size heap copy, so ASan catches a read past the key. */
        size_t len = redis_slots[i].len;
        char *k = malloc(len > 0 ? len : 1);
        cr_assert_not_null(k);
        memcpy(k, redis_slots[i].key, len);
        cr_assert_eq(cluster_keyslot(k, len), redis_slots[i].slot,
                     "key #%zu (%zu bytes): slot %u, Redis says %u", i, len, cluster_keyslot(k, len),
                     redis_slots[i].slot);
        free(k);
    }
}

Test(cluster_slot, empty_key_may_be_null)
{
    cr_assert_eq(cluster_keyslot(NULL, 0), 0);
}

Test(cluster_slot, a_users_keys_share_a_slot)
{
    /* Contract §10: every key of one user carries {<uid>}, so per-user scripts stay on one node. */
    const char *keys[] = {"user:route:{123456789}", "user:status:{123456789}", "session:{123456789}:abc"};
    uint16_t tag = cluster_keyslot("123456789", 9);
    cr_assert_eq(tag, 12739);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(cluster_keyslot(keys[i], strlen(keys[i])), tag, "%s", keys[i]);
}

Test(cluster_slot, always_in_range)
{
    char buf[32];
    for (unsigned i = 0; i < 100000; i++) {
        int n = snprintf(buf, sizeof(buf), "k%u", i * 2654435761u);
        cr_assert_lt(cluster_keyslot(buf, (size_t)n), CLUSTER_SLOTS);
    }
}
