/* shards/resp: Redis commands built in RESP by hand. Every byte matters: Redis closes the
 * connection on a malformed command, and a wrong length shifts every later reply. */
#include <criterion/criterion.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "leak.h"
#include "shards/resp.h"

/* The builder holds exactly `want` (len bytes, no NUL). */
#define assert_built(r, want)                                                                                \
    do {                                                                                                     \
        const char *w_ = (want);                                                                             \
        size_t wl_ = sizeof(want) - 1;                                                                       \
        cr_assert_not((r)->failed);                                                                          \
        cr_assert_eq((r)->len, wl_, "built %zu bytes '%.*s', want %zu '%s'", (r)->len, (int)(r)->len,        \
                     (r)->buf, wl_, w_);                                                                     \
        cr_assert_eq(memcmp((r)->buf, w_, wl_), 0, "built '%.*s', want '%s'", (int)(r)->len, (r)->buf, w_); \
    } while (0)

Test(resp, command_of_plain_args)
{
    struct resp r;
    cr_assert_eq(resp_init(&r), 0);
    resp_start(&r, 3);
    resp_arg_str(&r, "GET");
    resp_arg_str(&r, "user:route:42");
    resp_arg(&r, "xy", 2);
    assert_built(&r, "*3\r\n$3\r\nGET\r\n$13\r\nuser:route:42\r\n$2\r\nxy\r\n");
    resp_free(&r);
    cr_assert_null(r.buf);
    expect_no_leaks();
}

Test(resp, start_discards_the_previous_command)
{
    struct resp r;
    cr_assert_eq(resp_init(&r), 0);
    resp_start(&r, 2);
    resp_arg_str(&r, "SET");
    resp_arg_str(&r, "k");
    resp_start(&r, 0);
    assert_built(&r, "*0\r\n");
    resp_start(&r, 1);
    resp_arg_str(&r, "PING");
    assert_built(&r, "*1\r\n$4\r\nPING\r\n");
    resp_free(&r);
}

Test(resp, empty_and_binary_args_are_length_prefixed)
{
    struct resp r;
    cr_assert_eq(resp_init(&r), 0);
    resp_start(&r, 2);
    resp_arg(&r, NULL, 0);
    resp_arg(&r, "a\0\r\n$b", 6); /* NUL, CR LF and '$' inside: only the length counts */
    assert_built(&r, "*2\r\n$0\r\n\r\n$6\r\na\0\r\n$b\r\n");
    resp_free(&r);
}

Test(resp, id_args_join_prefix_number_separator_tail)
{
    struct resp r;
    cr_assert_eq(resp_init(&r), 0);
    resp_start(&r, 4);
    resp_arg_id(&r, "user:route:", 42, "", NULL, 0);
    resp_arg_id(&r, "", 42, ":", "gw-1:7000", 9);
    resp_arg_id(&r, "user:", 7, "", NULL, 0);
    resp_arg_id(&r, "", 3600, "", NULL, 0);
    assert_built(&r, "*4\r\n$13\r\nuser:route:42\r\n$12\r\n42:gw-1:7000\r\n$6\r\nuser:7\r\n$4\r\n3600\r\n");
    resp_free(&r);
}

Test(resp, id_arg_with_binary_tail)
{
    struct resp r;
    cr_assert_eq(resp_init(&r), 0);
    resp_start(&r, 1);
    resp_arg_id(&r, "", 5, ":", "\0\xff", 2);
    assert_built(&r, "*1\r\n$4\r\n5:\0\xff\r\n");
    resp_free(&r);
}

/* The two-digits-at-a-time formatter, at every digit-count edge and both extremes. */
Test(resp, id_numbers_match_printf)
{
    static const long long numbers[] = {0,       1,        9,          10,          11,        99,
                                        100,     101,      999,        1000,        12345,     99999,
                                        100000,  -1,       -9,         -10,         -99,       -100,
                                        -12345,  LLONG_MAX, LLONG_MIN,  LLONG_MIN + 1, 4294967296LL,
                                        1000000000000000000LL};
    struct resp r;
    cr_assert_eq(resp_init(&r), 0);
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
        char digits[32], want[64];
        int n = snprintf(digits, sizeof(digits), "%lld", numbers[i]);
        int wl = snprintf(want, sizeof(want), "*1\r\n$%d\r\n%s\r\n", n, digits);
        resp_start(&r, 1);
        resp_arg_id(&r, "", numbers[i], "", NULL, 0);
        cr_assert_eq(r.len, (size_t)wl, "%lld: built '%.*s'", numbers[i], (int)r.len, r.buf);
        cr_assert_eq(memcmp(r.buf, want, (size_t)wl), 0, "%lld: built '%.*s', want '%s'", numbers[i],
                     (int)r.len, r.buf, want);
    }
    /* And the extremes spelled out, not only compared with printf. */
    resp_start(&r, 1);
    resp_arg_id(&r, "", LLONG_MIN, "", NULL, 0);
    assert_built(&r, "*1\r\n$20\r\n-9223372036854775808\r\n");
    resp_start(&r, 1);
    resp_arg_id(&r, "", LLONG_MAX, "", NULL, 0);
    assert_built(&r, "*1\r\n$19\r\n9223372036854775807\r\n");
    resp_free(&r);
}

Test(resp, argument_count_header_is_decimal)
{
    struct resp r;
    cr_assert_eq(resp_init(&r), 0);
    resp_start(&r, 12);
    assert_built(&r, "*12\r\n");
    resp_free(&r);
}

/* The buffer starts at 4096 bytes: a command of exactly that size fits without growing, one
 * byte more grows it, and nothing built before is lost. */
Test(resp, grows_past_the_first_buffer_and_keeps_content)
{
    struct resp r;
    cr_assert_eq(resp_init(&r), 0);
    size_t first_cap = r.cap;
    cr_assert_eq(first_cap, 4096);
    /* "*1\r\n" (4) + "$4083\r\n" (7) + 4083 + "\r\n" (2) = 4096. */
    char *big = malloc(8192);
    cr_assert_not_null(big);
    for (size_t i = 0; i < 8192; i++)
        big[i] = (char)('a' + i % 26);
    resp_start(&r, 1);
    resp_arg(&r, big, 4083);
    cr_assert_not(r.failed);
    cr_assert_eq(r.len, 4096);
    cr_assert_eq(r.cap, first_cap, "an exact fit must not grow the buffer");

    resp_start(&r, 2);
    resp_arg_str(&r, "SET");
    resp_arg(&r, big, 4084);
    cr_assert_not(r.failed);
    cr_assert_eq(r.len, 4 + 9 + 7 + 4084 + 2);
    cr_assert_geq(r.cap, r.len);
    cr_assert_eq(memcmp(r.buf, "*2\r\n$3\r\nSET\r\n$4084\r\n", 20), 0);
    cr_assert_eq(memcmp(r.buf + 20, big, 4084), 0);
    cr_assert_eq(memcmp(r.buf + 20 + 4084, "\r\n", 2), 0);

    /* A 1 MiB payload (a large Deliver), then a small command reuses the grown buffer. */
    size_t mib = 1u << 20;
    char *payload = malloc(mib);
    cr_assert_not_null(payload);
    for (size_t i = 0; i < mib; i++)
        payload[i] = (char)(i * 7);
    resp_start(&r, 3);
    resp_arg_str(&r, "PUBLISH");
    resp_arg_id(&r, "user:", 9, "", NULL, 0);
    resp_arg(&r, payload, mib);
    cr_assert_not(r.failed);
    const char head[] = "*3\r\n$7\r\nPUBLISH\r\n$6\r\nuser:9\r\n$1048576\r\n";
    cr_assert_eq(r.len, sizeof(head) - 1 + mib + 2);
    cr_assert_eq(memcmp(r.buf, head, sizeof(head) - 1), 0);
    cr_assert_eq(memcmp(r.buf + sizeof(head) - 1, payload, mib), 0);
    cr_assert_eq(memcmp(r.buf + r.len - 2, "\r\n", 2), 0);
    size_t grown = r.cap;
    resp_start(&r, 1);
    resp_arg_str(&r, "PING");
    assert_built(&r, "*1\r\n$4\r\nPING\r\n");
    cr_assert_eq(r.cap, grown);

    free(payload);
    free(big);
    resp_free(&r);
    expect_no_leaks();
}

/* After an allocation failure (the state reserve() leaves: failed set) the command is
 * incomplete: nothing more is appended, the flag stays until the next command starts. */
Test(resp, failure_flag_sticks_until_the_next_start)
{
    struct resp r;
    cr_assert_eq(resp_init(&r), 0);
    resp_start(&r, 2);
    resp_arg_str(&r, "GET");
    size_t len = r.len;
    r.failed = true;
    resp_arg_str(&r, "key");
    resp_arg_id(&r, "user:", 1, "", NULL, 0);
    resp_arg(&r, "x", 1);
    cr_assert(r.failed);
    cr_assert_eq(r.len, len, "a failed command grew from %zu to %zu bytes", len, r.len);
    resp_start(&r, 1);
    resp_arg_str(&r, "PING");
    assert_built(&r, "*1\r\n$4\r\nPING\r\n");
    resp_free(&r);
}
