/* core/near_cache: the table's rules (docs/near-cache.md) without Redis -- a fetch cached only
 * while nothing cancelled it, deadlines, CLOCK eviction at capacity, flushes, sessions copied per
 * answer, and which invalidated key names a user. The shard side (tracking, the fence) is tested
 * end to end in tests/integration/test_near_cache.c. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "core/near_cache.h"
#include "core/session_list.h"

static struct nc_value route_value(const char *route, int64_t deadline)
{
    return (struct nc_value){.route = route, .route_len = route ? strlen(route) : 0, .deadline_ms = deadline};
}

/* Cache uid -> route (NULL: offline) through a whole fetch; asserts it was cached. */
static void put(struct near_cache *nc, int64_t uid, const char *route, int64_t deadline)
{
    uint64_t token = near_cache_begin_fetch(nc, uid);
    struct nc_value v = route_value(route, deadline);
    cr_assert_eq(near_cache_complete_fetch(nc, uid, token, &v), 1);
}

static void expect_route(struct near_cache *nc, int64_t uid, int64_t now, const char *want)
{
    const struct nc_entry *e = near_cache_lookup(nc, uid, now);
    cr_assert_not_null(e, "uid %lld not cached", (long long)uid);
    size_t len = 0;
    const char *r = near_cache_route(e, &len);
    if (want == NULL) {
        cr_assert_null(r, "uid %lld: want offline", (long long)uid);
        return;
    }
    cr_assert_not_null(r);
    cr_assert_eq(len, strlen(want));
    cr_assert_eq(memcmp(r, want, len), 0);
}

Test(near_cache, fetch_then_hit_and_offline_users_too)
{
    struct near_cache *nc = near_cache_new(16);
    cr_assert_null(near_cache_lookup(nc, 7, 0));
    put(nc, 7, "gw-1:7000", 1000);
    put(nc, 8, NULL, 1000);
    expect_route(nc, 7, 10, "gw-1:7000");
    expect_route(nc, 8, 10, NULL);
    cr_assert_eq(near_cache_entries(nc), 2);
    near_cache_free(nc);
}

Test(near_cache, fetching_entry_is_not_served)
{
    struct near_cache *nc = near_cache_new(16);
    near_cache_begin_fetch(nc, 7);
    cr_assert_null(near_cache_lookup(nc, 7, 0));
    cr_assert_eq(near_cache_entries(nc), 1);
    near_cache_free(nc);
}

Test(near_cache, invalidation_during_fetch_cancels_its_caching)
{
    struct near_cache *nc = near_cache_new(16);
    uint64_t token = near_cache_begin_fetch(nc, 7);
    cr_assert(near_cache_invalidate(nc, 7));
    struct nc_value v = route_value("old:1", 1000);
    cr_assert_eq(near_cache_complete_fetch(nc, 7, token, &v), 0);
    cr_assert_null(near_cache_lookup(nc, 7, 0));
    cr_assert_eq(near_cache_entries(nc), 0);
    near_cache_free(nc);
}

Test(near_cache, later_fetch_wins_over_an_earlier_one)
{
    struct near_cache *nc = near_cache_new(16);
    uint64_t first = near_cache_begin_fetch(nc, 7);
    uint64_t second = near_cache_begin_fetch(nc, 7);
    cr_assert_neq(first, second);
    struct nc_value old = route_value("old:1", 1000), fresh = route_value("new:1", 1000);
    cr_assert_eq(near_cache_complete_fetch(nc, 7, first, &old), 0);
    cr_assert_eq(near_cache_complete_fetch(nc, 7, second, &fresh), 1);
    expect_route(nc, 7, 0, "new:1");
    /* A completed entry takes no second completion. */
    cr_assert_eq(near_cache_complete_fetch(nc, 7, second, &old), 0);
    expect_route(nc, 7, 0, "new:1");
    near_cache_free(nc);
}

Test(near_cache, clear_cancels_every_fetch_in_flight)
{
    struct near_cache *nc = near_cache_new(16);
    put(nc, 1, "a:1", 1000);
    uint64_t t2 = near_cache_begin_fetch(nc, 2);
    near_cache_clear(nc);
    cr_assert_eq(near_cache_entries(nc), 0);
    cr_assert_null(near_cache_lookup(nc, 1, 0));
    struct nc_value v = route_value("b:1", 1000);
    cr_assert_eq(near_cache_complete_fetch(nc, 2, t2, &v), 0);
    /* A fetch begun after the clear for the same user gets a token the old one does not match. */
    uint64_t t2b = near_cache_begin_fetch(nc, 2);
    cr_assert_neq(t2, t2b);
    cr_assert_eq(near_cache_complete_fetch(nc, 2, t2, &v), 0);
    cr_assert_eq(near_cache_complete_fetch(nc, 2, t2b, &v), 1);
    expect_route(nc, 2, 0, "b:1");
    near_cache_free(nc);
}

Test(near_cache, cancel_forgets_only_that_fetch)
{
    struct near_cache *nc = near_cache_new(16);
    uint64_t t = near_cache_begin_fetch(nc, 3);
    near_cache_cancel(nc, 3, t + 1); /* another token: no effect */
    cr_assert_eq(near_cache_entries(nc), 1);
    near_cache_cancel(nc, 3, t);
    cr_assert_eq(near_cache_entries(nc), 0);
    put(nc, 4, "x:1", 100);
    near_cache_cancel(nc, 4, 1); /* a READY entry is not a fetch */
    expect_route(nc, 4, 0, "x:1");
    near_cache_free(nc);
}

Test(near_cache, deadline_expires_entry_at_lookup)
{
    struct near_cache *nc = near_cache_new(16);
    put(nc, 7, "gw:1", 500);
    expect_route(nc, 7, 499, "gw:1");
    cr_assert_null(near_cache_lookup(nc, 7, 500), "served at its deadline");
    cr_assert_eq(near_cache_entries(nc), 0, "an expired entry is dropped");
    near_cache_free(nc);
}

Test(near_cache, capacity_bounds_entries_and_clock_keeps_the_hit_one)
{
    struct near_cache *nc = near_cache_new(4);
    for (int64_t u = 1; u <= 4; u++)
        put(nc, u, "gw:1", 1000);
    expect_route(nc, 1, 0, "gw:1"); /* 1 gets its second chance */
    put(nc, 5, "gw:5", 1000);
    cr_assert_eq(near_cache_entries(nc), 4);
    expect_route(nc, 1, 0, "gw:1");
    expect_route(nc, 5, 0, "gw:5");
    cr_assert_null(near_cache_lookup(nc, 2, 0), "the first entry not hit is the one evicted");
    for (int64_t u = 100; u < 1100; u++) {
        put(nc, u, "gw:many", 1000);
        cr_assert_leq(near_cache_entries(nc), 4);
    }
    expect_route(nc, 1099, 0, "gw:many");
    near_cache_free(nc);
}

Test(near_cache, capacity_one)
{
    struct near_cache *nc = near_cache_new(1);
    put(nc, 1, "a:1", 1000);
    put(nc, 2, "b:1", 1000);
    cr_assert_eq(near_cache_entries(nc), 1);
    cr_assert_null(near_cache_lookup(nc, 1, 0));
    expect_route(nc, 2, 0, "b:1");
    near_cache_free(nc);
}

Test(near_cache, long_route_lives_outside_the_entry)
{
    struct near_cache *nc = near_cache_new(8);
    char big[256];
    memset(big, 'g', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    put(nc, 9, big, 1000);
    expect_route(nc, 9, 0, big);
    cr_assert(near_cache_invalidate(nc, 9));
    cr_assert_not(near_cache_invalidate(nc, 9));
    put(nc, 9, big, 1000); /* freed and made again: ASan checks both */
    near_cache_clear(nc);
    put(nc, 9, big, 1000);
    near_cache_free(nc);
}

static struct pr_sessions *two_sessions(void)
{
    struct pr_sessions *l = session_list_new(2, 20);
    cr_assert_not_null(l);
    struct session_view a = {.device = "phone", .device_len = 5, .gateway = "gw-a:1", .gateway_len = 6,
                             .platform = 2, .epoch = 20, .last_seen_ms = 2000};
    struct session_view b = {.device = "", .device_len = 0, .gateway = "gw-b:1", .gateway_len = 6,
                             .platform = 0, .epoch = 10, .last_seen_ms = 1000};
    session_list_add(l, &a);
    session_list_add(l, &b);
    return l;
}

Test(near_cache, sessions_belong_to_the_entry_and_each_answer_gets_a_copy)
{
    struct near_cache *nc = near_cache_new(8);
    uint64_t t = near_cache_begin_fetch(nc, 5);
    struct nc_value v = route_value("gw-a:1", 1000);
    v.sessions = two_sessions();
    cr_assert_eq(near_cache_complete_fetch(nc, 5, t, &v), 1);
    for (int round = 0; round < 2; round++) {
        const struct nc_entry *e = near_cache_lookup(nc, 5, 0);
        cr_assert_not_null(e);
        struct pr_sessions *copy = NULL;
        cr_assert_eq(near_cache_copy_sessions(e->sessions, &copy), 0);
        cr_assert_not_null(copy);
        cr_assert_neq(copy, e->sessions);
        cr_assert_eq(copy->n, 2);
        cr_assert_str_eq(copy->ptrs[0]->device_id, "phone");
        cr_assert_str_eq(copy->ptrs[0]->gateway_addr, "gw-a:1");
        cr_assert_eq(copy->ptrs[0]->platform, 2);
        cr_assert_eq(copy->ptrs[0]->epoch, 20);
        cr_assert_eq(copy->ptrs[0]->last_seen_ms, 2000);
        cr_assert_str_eq(copy->ptrs[1]->device_id, "");
        cr_assert_eq(copy->ptrs[1]->epoch, 10);
        cr_assert_eq(copy->wire_bound, e->sessions->wire_bound);
        session_list_free(copy); /* as the acceptor does after encoding */
    }
    struct pr_sessions *none = (struct pr_sessions *)1;
    cr_assert_eq(near_cache_copy_sessions(NULL, &none), 0);
    cr_assert_null(none);
    near_cache_free(nc); /* frees the entry's own list */
}

Test(near_cache, not_cached_sessions_stay_with_the_caller)
{
    struct near_cache *nc = near_cache_new(8);
    uint64_t t = near_cache_begin_fetch(nc, 5);
    near_cache_invalidate(nc, 5);
    struct nc_value v = route_value("gw-a:1", 1000);
    v.sessions = two_sessions();
    cr_assert_eq(near_cache_complete_fetch(nc, 5, t, &v), 0);
    session_list_free(v.sessions); /* the caller's: ASan would report a double free otherwise */
    near_cache_free(nc);
}

Test(near_cache, capacity_limits)
{
    cr_assert_null(near_cache_new(0));
    cr_assert_null(near_cache_new(NEAR_CACHE_MAX + 1));
}

static bool key_uid(const char *key, int64_t *uid)
{
    return near_cache_key_uid(key, strlen(key), uid);
}

Test(near_cache, invalidated_key_names_its_user)
{
    int64_t uid = 0;
    cr_assert(key_uid("user:route:123", &uid));
    cr_assert_eq(uid, 123);
    cr_assert(key_uid("user:sessions:123", &uid) && uid == 123);
    cr_assert(key_uid("user:route:{123}", &uid) && uid == 123);
    cr_assert(key_uid("user:sessions:{9223372036854775807}", &uid) && uid == INT64_MAX);
    static const char *const not_ours[] = {
        "user:status:123", "user:route:", "user:route:{}", "user:route:12a", "user:route:-1", "user:route:0",
        "user:route:{123", "user:route:123}", "user:route:9223372036854775808", "user:route:99999999999999999999",
        "gateway:sessions:gw", "user:routes:1", "xuser:route:1", "", "user:route:+5", "user:route: 5",
    };
    for (size_t i = 0; i < sizeof(not_ours) / sizeof(not_ours[0]); i++)
        cr_assert_not(key_uid(not_ours[i], &uid), "'%s' taken for a user's key", not_ours[i]);
}
