/* Pure after slot_tags_init: any thread (core/slot_tag.h). */
#include "core/slot_tag.h"

#include <pthread.h>
#include <stdio.h>

#include "core/cluster_slot.h"

static uint32_t tags[CLUSTER_SLOTS];
static pthread_once_t built = PTHREAD_ONCE_INIT;

static void build(void)
{
    static uint8_t have[CLUSTER_SLOTS];
    uint32_t left = CLUSTER_SLOTS;
    char buf[16];
    for (uint32_t n = 0; left > 0; n++) {
        int len = snprintf(buf, sizeof(buf), "%u", n);
        uint16_t slot = cluster_crc16(buf, (size_t)len) & (CLUSTER_SLOTS - 1);
        if (!have[slot]) {
            have[slot] = 1;
            tags[slot] = n;
            left--;
        }
    }
}

void slot_tags_init(void)
{
    pthread_once(&built, build);
}

uint32_t slot_tag(uint16_t slot)
{
    return tags[slot & (CLUSTER_SLOTS - 1)];
}

size_t slot_tag_text(uint16_t slot, char *buf)
{
    return (size_t)snprintf(buf, SLOT_TAG_BUF, "%u", slot_tag(slot));
}
