/* core/slot_tag: a hash tag for every cluster slot, the smallest decimal number hashing there. */
#include <criterion/criterion.h>

#include <stdio.h>
#include <string.h>

#include "core/cluster_slot.h"
#include "core/slot_tag.h"

Test(slot_tag, every_slot_has_a_tag_that_hashes_to_it)
{
    slot_tags_init();
    for (uint32_t slot = 0; slot < CLUSTER_SLOTS; slot++) {
        char tag[SLOT_TAG_BUF];
        size_t n = slot_tag_text((uint16_t)slot, tag);
        cr_assert(n >= 1 && n <= SLOT_TAG_MAX, "slot %u: tag '%s'", slot, tag);
        cr_assert_eq(cluster_crc16(tag, n) % CLUSTER_SLOTS, slot, "slot %u: tag %s", slot, tag);
        /* As a key's hash tag it puts the key in that slot, whatever follows it. */
        char key[64];
        int len = snprintf(key, sizeof(key), "gateway:sessions:{%s}:gw-1:{x}", tag);
        cr_assert_eq(cluster_keyslot(key, (size_t)len), slot, "%s", key);
    }
}

Test(slot_tag, each_tag_is_the_smallest_number_for_its_slot)
{
    slot_tags_init();
    /* Every smaller number lands in another slot: instances that build the table alone agree. */
    static uint8_t seen[CLUSTER_SLOTS];
    uint32_t max = 0;
    for (uint32_t slot = 0; slot < CLUSTER_SLOTS; slot++)
        max = slot_tag((uint16_t)slot) > max ? slot_tag((uint16_t)slot) : max;
    for (uint32_t n = 0; n <= max; n++) {
        char buf[16];
        int len = snprintf(buf, sizeof(buf), "%u", n);
        uint16_t slot = cluster_crc16(buf, (size_t)len) % CLUSTER_SLOTS;
        if (!seen[slot]) {
            seen[slot] = 1;
            cr_assert_eq(slot_tag(slot), n, "slot %u: first number %u, tag %u", slot, n, slot_tag(slot));
        }
    }
    cr_assert_leq(max, 999999, "tags fit SLOT_TAG_MAX digits");
}

Test(slot_tag, init_twice_is_harmless)
{
    slot_tags_init();
    uint32_t a = slot_tag(12345);
    slot_tags_init();
    cr_assert_eq(slot_tag(12345), a);
}
