/* Contract §5: im-presence-cli against a real server. One answer per line
 * ("CODE key=value ... [msg=\"...\"]"); exit 0 for OK/NOT_FOUND, 1 for another answer,
 * 2 for a usage error, 3 for a transport error. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

TestSuite(cli, .init = fx_init_server, .fini = fx_fini, .timeout = IT_TIMEOUT);

struct cli_result {
    int code;
    char *out;
    char *err;
};

/* Run the CLI against the server under test with up to 4 arguments after the command. */
static struct cli_result cli_at(int port, const char *a0, const char *a1, const char *a2, const char *a3)
{
    char p[16];
    snprintf(p, sizeof(p), "%d", port);
    const char *argv[10] = {it_cli_bin(), "-h", "127.0.0.1", "-p", p};
    int n = 5;
    const char *args[] = {a0, a1, a2, a3};
    for (int i = 0; i < 4 && args[i] != NULL; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    struct cli_result r;
    r.code = it_run(argv, &r.out, &r.err, 10000 * IT_SLOW);
    cr_assert_neq(r.code, -1, "the CLI did not finish");
    return r;
}

static struct cli_result cli(const char *a0, const char *a1, const char *a2, const char *a3)
{
    return cli_at(FX.srv.port, a0, a1, a2, a3);
}

static void cli_free(struct cli_result *r)
{
    free(r->out);
    free(r->err);
}

/* stdout is exactly one line: `want`, optionally followed by ` msg="..."`. */
static void expect_line(const struct cli_result *r, const char *want)
{
    size_t n = strlen(want);
    cr_assert(strncmp(r->out, want, n) == 0, "stdout '%s', want '%s'", r->out, want);
    const char *rest = r->out + n;
    bool ok = strcmp(rest, "\n") == 0 ||
              (strncmp(rest, " msg=\"", 6) == 0 && strchr(rest, '\n') == rest + strlen(rest) - 1);
    cr_assert(ok, "stdout '%s' has more than '%s' and an optional msg", r->out, want);
}

static void expect_exit(const struct cli_result *r, int code)
{
    cr_assert_eq(r->code, code, "exit %d, want %d; stdout '%s' stderr '%s'", r->code, code, r->out, r->err);
}

/* "OK delivered=no timestamp=<ms>": check the fixed part and that the timestamp is now. */
static void expect_deliver_line(const struct cli_result *r, const char *prefix)
{
    size_t n = strlen(prefix);
    cr_assert(strncmp(r->out, prefix, n) == 0, "stdout '%s', want '%s<ms>'", r->out, prefix);
    char *end;
    long long ts = strtoll(r->out + n, &end, 10);
    cr_assert(end != r->out + n, "no timestamp in '%s'", r->out);
    long long now = it_now_ms();
    cr_assert(ts > now - 5000 && ts < now + 5000, "timestamp %lld is not now (%lld)", ts, now);
    cr_assert(*end == '\n' || strncmp(end, " msg=\"", 6) == 0, "stdout '%s'", r->out);
}

IT(cli, bind_prints_route_key_and_writes_redis)
{
    struct cli_result r = cli("bind", "42", "gw-1:7000", NULL);
    expect_exit(&r, 0);
    /* "OK route_key=user:route:42 epoch=<the session's epoch>" and nothing else. */
    static const char want[] = "OK route_key=user:route:42 epoch=";
    cr_assert(strncmp(r.out, want, strlen(want)) == 0, "stdout '%s', want '%s<epoch>'", r.out, want);
    char *end;
    long long epoch = strtoll(r.out + strlen(want), &end, 10);
    cr_assert(epoch > 0 && strcmp(end, "\n") == 0, "stdout '%s'", r.out);
    cli_free(&r);
    char *v = it_rget(FX.cache.port, 0, "user:route:42", NULL);
    cr_assert_not_null(v);
    cr_assert_str_eq(v, "gw-1:7000");
    free(v);
}

IT(cli, query_prints_gateway_and_online_or_not_found)
{
    struct cli_result r = cli("query", "42", NULL, NULL);
    expect_exit(&r, 0);
    expect_line(&r, "NOT_FOUND online=no");
    cli_free(&r);

    r = cli("bind", "42", "gw-1:7000", NULL);
    expect_exit(&r, 0);
    cli_free(&r);
    r = cli("query", "42", NULL, NULL);
    expect_exit(&r, 0);
    /* The answer's line, then one line per live session (contract §6). */
    static const char want[] = "OK gateway=gw-1:7000 online=yes sessions=1\n"
                               "  session device=\"\" gateway=gw-1:7000 platform=0 epoch=";
    cr_assert(strncmp(r.out, want, strlen(want)) == 0, "stdout '%s', want '%s...'", r.out, want);
    cr_assert_not_null(strstr(r.out, " last_seen_ms="), "stdout '%s'", r.out);
    cli_free(&r);
}

IT(cli, deliver_prints_delivered_and_timestamp)
{
    struct cli_result r = cli("deliver", "42", "hello", NULL);
    expect_exit(&r, 0);
    expect_deliver_line(&r, "NOT_FOUND delivered=no timestamp=");
    cli_free(&r);

    r = cli("bind", "42", "gw-1:7000", NULL);
    cli_free(&r);
    r = cli("deliver", "42", "hello", "chat");
    expect_exit(&r, 0);
    expect_deliver_line(&r, "OK delivered=no timestamp=");
    cli_free(&r);

    const char *ch[] = {"user:42", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    r = cli("deliver", "42", "hello there", NULL);
    expect_exit(&r, 0);
    expect_deliver_line(&r, "OK delivered=yes timestamp=");
    cli_free(&r);
    it_sub_expect(s, "user:42", "hello there", strlen("hello there"));
    it_sub_close(s);
}

IT(cli, unbind_prints_unbound_yes_then_no)
{
    struct cli_result r = cli("bind", "42", "gw-1:7000", NULL);
    cli_free(&r);
    r = cli("unbind", "42", "gw-other:1", NULL);
    expect_exit(&r, 0);
    expect_line(&r, "OK unbound=no");
    cli_free(&r);
    r = cli("unbind", "42", "gw-1:7000", NULL);
    expect_exit(&r, 0);
    expect_line(&r, "OK unbound=yes");
    cli_free(&r);
    r = cli("unbind", "42", "gw-1:7000", NULL);
    expect_exit(&r, 0);
    expect_line(&r, "OK unbound=no");
    cli_free(&r);
}

IT(cli, heartbeat_prints_refreshed)
{
    struct cli_result r = cli("heartbeat", "42", "gw-1:7000", NULL);
    expect_exit(&r, 0);
    expect_line(&r, "OK refreshed=no");
    cli_free(&r);
    r = cli("bind", "42", "gw-1:7000", NULL);
    cli_free(&r);
    r = cli("heartbeat", "42", "gw-1:7000", NULL);
    expect_exit(&r, 0);
    expect_line(&r, "OK refreshed=yes");
    cli_free(&r);
}

IT(cli, invalid_answer_exits_1_with_message)
{
    struct cli_result r = cli("bind", "0", "gw-1:7000", NULL);
    expect_exit(&r, 1);
    cr_assert(strncmp(r.out, "INVALID", 7) == 0, "stdout '%s'", r.out);
    cr_assert_not_null(strstr(r.out, "msg=\""), "no msg in '%s'", r.out);
    cr_assert_not_null(strstr(r.out, "user_id"), "msg does not name user_id: '%s'", r.out);
    cli_free(&r);

    r = cli("bind", "5", "has\ttab", NULL);
    expect_exit(&r, 1);
    cr_assert(strncmp(r.out, "INVALID", 7) == 0, "stdout '%s'", r.out);
    cli_free(&r);
    cr_assert_eq(it_rdbsize_all(FX.cache.port), 0);
}

IT(cli, connection_refused_exits_3_with_message)
{
    int port = it_free_port();
    struct cli_result r = cli_at(port, "query", "1", NULL, NULL);
    expect_exit(&r, 3);
    cr_assert_str_neq(r.err, "", "no message on stderr");
    cr_assert_str_eq(r.out, "", "stdout '%s' for a failed connection", r.out);
    cli_free(&r);
}

IT(cli, bad_usage_exits_2)
{
    static const char *const cases[][4] = {
        {NULL, NULL, NULL, NULL},        /* no command */
        {"frobnicate", "1", NULL, NULL}, /* unknown command */
        {"bind", "1", NULL, NULL},       /* missing gateway */
        {"query", NULL, NULL, NULL},     /* missing uid */
        {"query", "abc", NULL, NULL},    /* not a number */
        {"query", "1", "2", NULL},       /* too many */
        {"deliver", "1", "m", "t"},      /* fine: 3 args */
    };
    for (size_t i = 0; i + 1 < sizeof(cases) / sizeof(cases[0]); i++) {
        struct cli_result r = cli(cases[i][0], cases[i][1], cases[i][2], cases[i][3]);
        expect_exit(&r, 2);
        cr_assert_str_neq(r.err, "", "case %zu: no usage message on stderr", i);
        cr_assert_str_eq(r.out, "", "case %zu: stdout '%s' on a usage error", i, r.out);
        cli_free(&r);
    }
    /* A bad -p is a usage error too, before any connection. */
    const char *argv[] = {it_cli_bin(), "-p", "notaport", "query", "1", NULL};
    char *out = NULL, *err = NULL;
    int code = it_run(argv, &out, &err, 10000 * IT_SLOW);
    cr_assert_eq(code, 2, "-p notaport: exit %d", code);
    free(out);
    free(err);
}

IT(cli, binary_and_quoted_values_print_on_one_line)
{
    /* A route set by someone else may hold any byte: the CLI quotes it, on one line. */
    it_rcmd(FX.cache.port, 0, "SET user:route:9 %b", "gw \"x\"\n\x01", (size_t)8);
    struct cli_result r = cli("query", "9", NULL, NULL);
    expect_exit(&r, 0);
    cr_assert(strncmp(r.out, "OK gateway=\"", 12) == 0, "stdout '%s'", r.out);
    cr_assert_eq(strchr(r.out, '\n'), r.out + strlen(r.out) - 1, "more than one line: '%s'", r.out);
    for (const char *p = r.out; *p != '\n'; p++)
        cr_assert(isprint((unsigned char)*p), "unprintable byte 0x%02x in '%s'", (unsigned char)*p, r.out);
    cli_free(&r);
}

/* Contract §8: gateway-heartbeat GW MS prints the lease's end; drain GW the sessions it removed. */
IT(cli, gateway_heartbeat_prints_expires_ms_and_drain_sessions_removed)
{
    long long t0 = it_now_ms();
    struct cli_result r = cli("gateway-heartbeat", "gw-1:7000", "5000", NULL);
    expect_exit(&r, 0);
    static const char want[] = "OK expires_ms=";
    cr_assert(strncmp(r.out, want, strlen(want)) == 0, "stdout '%s'", r.out);
    char *end;
    long long expires = strtoll(r.out + strlen(want), &end, 10);
    cr_assert(strcmp(end, "\n") == 0, "stdout '%s'", r.out);
    cr_assert(expires >= t0 + 5000 && expires <= it_now_ms() + 5000, "expires_ms %lld is not 5 s from now", expires);
    cli_free(&r);

    r = cli("gateway-heartbeat", "gw-1:7000", "999", NULL);
    expect_exit(&r, 1);
    cr_assert(strncmp(r.out, "INVALID msg=\"", 13) == 0 && strstr(r.out, "lease_ms") != NULL, "stdout '%s'", r.out);
    cli_free(&r);
    r = cli("drain", "", NULL, NULL);
    expect_exit(&r, 1);
    cr_assert(strstr(r.out, "gateway_addr") != NULL, "stdout '%s'", r.out);
    cli_free(&r);

    r = cli("drain", "gw-1:7000", NULL, NULL);
    expect_exit(&r, 0);
    expect_line(&r, "OK sessions_removed=0");
    cli_free(&r);
    r = cli("bind", "42", "gw-1:7000", NULL);
    cli_free(&r);
    r = cli("bind", "43", "gw-1:7000", NULL);
    cli_free(&r);
    r = cli("drain", "gw-1:7000", NULL, NULL);
    expect_exit(&r, 0);
    expect_line(&r, "OK sessions_removed=2");
    cli_free(&r);
    r = cli("query", "42", NULL, NULL);
    expect_line(&r, "NOT_FOUND online=no");
    cli_free(&r);

    static const char *const usage_cases[][4] = {
        {"drain", NULL, NULL, NULL},                        /* no gateway */
        {"drain", "gw", "x", NULL},                         /* too many */
        {"gateway-heartbeat", "gw", NULL, NULL},            /* no MS */
        {"gateway-heartbeat", "gw", "soon", NULL},          /* not a number */
        {"gateway-heartbeat", "gw", "99999999999", NULL},   /* not an int32 */
    };
    for (size_t i = 0; i < sizeof(usage_cases) / sizeof(usage_cases[0]); i++) {
        r = cli(usage_cases[i][0], usage_cases[i][1], usage_cases[i][2], usage_cases[i][3]);
        expect_exit(&r, 2);
        cr_assert_str_eq(r.out, "", "case %zu: stdout '%s' on a usage error", i, r.out);
        cli_free(&r);
    }
}
