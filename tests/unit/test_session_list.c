/* core/session_list: the stored form of a session, device_id validation, and the list the codec
 * encodes (built, encoded by protobuf-c, decoded back). */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core/session_list.h"

static int parse(const char *s, struct session_view *v)
{
    return session_value_parse(s, strlen(s), v);
}

Test(session_list, parses_the_stored_form_with_any_gateway_bytes_last)
{
    struct session_view v;
    cr_assert_eq(parse("1795983934250800|7|1795983934250|gw-1:7000", &v), 0);
    cr_assert_eq(v.epoch, 1795983934250800LL);
    cr_assert_eq(v.platform, 7);
    cr_assert_eq(v.last_seen_ms, 1795983934250LL);
    cr_assert_eq(v.gateway_len, 9);
    cr_assert_eq(memcmp(v.gateway, "gw-1:7000", 9), 0);
    /* The gateway may hold the separator, and may be empty. */
    cr_assert_eq(parse("5|0|6|a|b c", &v), 0);
    cr_assert_eq(v.gateway_len, 5);
    cr_assert_eq(memcmp(v.gateway, "a|b c", 5), 0);
    cr_assert_eq(parse("5|0|6|", &v), 0);
    cr_assert_eq(v.gateway_len, 0);
}

Test(session_list, refuses_anything_else)
{
    static const char *const bad[] = {
        "", "|", "1|2|3", "1|2|3", "x|0|1|gw", "1|x|1|gw", "1|0|x|gw", "-1|0|1|gw", "1|256|1|gw",
        "1||1|gw", "1|0||gw", "12345678901234567890|0|1|gw", "1 |0|1|gw",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct session_view v;
        cr_assert_eq(parse(bad[i], &v), -1, "accepted '%s'", bad[i]);
    }
}

Test(session_list, device_ids_are_0_to_64_of_a_small_alphabet)
{
    cr_assert_null(session_check_device("", 0));
    cr_assert_null(session_check_device("phone-1.A_b", 11));
    char max[65];
    memset(max, 'd', 64);
    cr_assert_null(session_check_device(max, 64));
    memset(max, 'd', 65);
    cr_assert_not_null(strstr(session_check_device(max, 65), "device_id"));
    static const char *const bad[] = {"a b", "a:b", "a|b", "é", "a/b", "a\nb"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_not_null(session_check_device(bad[i], strlen(bad[i])), "accepted '%s'", bad[i]);
    cr_assert_not_null(session_check_device("a\0b", 3), "a NUL inside");
}

Test(session_list, sorts_by_epoch_highest_first)
{
    struct session_view v[4] = {{.epoch = 3}, {.epoch = 10}, {.epoch = 1}, {.epoch = 7}};
    session_views_sort(v, 4);
    cr_assert(v[0].epoch == 10 && v[1].epoch == 7 && v[2].epoch == 3 && v[3].epoch == 1);
}

/* The list packs through protobuf-c as a QueryRouteResp and reads back the same, within the bound. */
Test(session_list, a_list_encodes_as_repeated_sessions_within_its_bound)
{
    struct session_view in[3] = {
        {"", 0, "gw-a:1", 6, 0, 100, 1000},
        {"phone", 5, "gw-b:2", 6, 2, 99, 999},
        {"tablet.2", 8, "a|b", 3, 255, 98, 998},
    };
    size_t bytes = 0;
    for (int i = 0; i < 3; i++)
        bytes += in[i].device_len + in[i].gateway_len;
    struct pr_sessions *l = session_list_new(3, bytes);
    cr_assert_not_null(l);
    for (int i = 0; i < 3; i++)
        session_list_add(l, &in[i]);
    cr_assert_eq(l->n, 3);
    Mpim__QueryRouteResp r = MPIM__QUERY_ROUTE_RESP__INIT;
    r.n_sessions = l->n;
    r.sessions = l->ptrs;
    size_t size = protobuf_c_message_get_packed_size(&r.base);
    cr_assert_leq(size, l->wire_bound);
    uint8_t *buf = malloc(size);
    protobuf_c_message_pack(&r.base, buf);
    Mpim__QueryRouteResp *back = mpim__query_route_resp__unpack(NULL, size, buf);
    cr_assert_not_null(back);
    cr_assert_eq(back->n_sessions, 3);
    for (int i = 0; i < 3; i++) {
        const Mpim__Session *x = back->sessions[i];
        cr_assert_eq(strlen(x->device_id), in[i].device_len);
        cr_assert_eq(memcmp(x->device_id, in[i].device, in[i].device_len), 0);
        cr_assert_eq(memcmp(x->gateway_addr, in[i].gateway, in[i].gateway_len), 0);
        cr_assert_eq(x->platform, in[i].platform);
        cr_assert_eq(x->epoch, in[i].epoch);
        cr_assert_eq(x->last_seen_ms, in[i].last_seen_ms);
    }
    mpim__query_route_resp__free_unpacked(back, NULL);
    free(buf);
    session_list_free(l);
}

Test(session_list, a_clone_is_equal_and_owns_its_strings)
{
    struct session_view in[2] = {
        {"", 0, "gw-a:1", 6, 0, 100, 1000},
        {"tablet.2", 8, "a|b", 3, 255, 98, 998},
    };
    struct pr_sessions *l = session_list_new(2, 6 + 8 + 3);
    cr_assert_not_null(l);
    for (int i = 0; i < 2; i++)
        session_list_add(l, &in[i]);
    struct pr_sessions *c = session_list_clone(l);
    cr_assert_not_null(c);
    cr_assert_eq(c->n, 2);
    cr_assert_eq(c->wire_bound, l->wire_bound);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(c->ptrs[i], &c->items[i]);
        cr_assert_str_eq(c->items[i].device_id, l->items[i].device_id);
        cr_assert_str_eq(c->items[i].gateway_addr, l->items[i].gateway_addr);
        cr_assert_neq(c->items[i].gateway_addr, l->items[i].gateway_addr, "shares the original's pool");
        cr_assert_eq(c->items[i].epoch, in[i].epoch);
        cr_assert_eq(c->items[i].platform, in[i].platform);
        cr_assert_eq(c->items[i].last_seen_ms, in[i].last_seen_ms);
    }
    session_list_free(l); /* the clone outlives it */
    cr_assert_str_eq(c->items[1].gateway_addr, "a|b");
    session_list_free(c);
}
