/* The operators' view (contract §6): GET /metrics in Prometheus text format 0.0.4 with exact
 * counts after a known workload, /healthz and /readyz following Redis, the Stats RPC and
 * `im-presence-cli stats` agreeing with /metrics, `im-presence-cli watch`, the log file reopened
 * on SIGHUP, and `im-presence --check-config`. */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

TestSuite(ops, .init = fx_init_server, .fini = fx_fini, .timeout = IT_TIMEOUT);
TestSuite(ops_redis, .init = fx_init_redis, .fini = fx_fini, .timeout = IT_TIMEOUT);
TestSuite(ops_split, .init = fx_init_split, .fini = fx_fini, .timeout = IT_TIMEOUT);

/* Redis back, shard reconnected (backoff up to 2 s + 25 %), /healthz polled: generous. */
#define RECOVER_MS (5000 * IT_SLOW)
/* A Redis that went away shows in /healthz and /readyz this soon. */
#define NOTICE_MS (3000 * IT_SLOW)

/* ------------------------------------------------------------------ helpers */

static int metrics_port(void)
{
    return it_metrics_port(&FX.srv);
}

/* GET /metrics (asserts 200); the caller frees. */
static char *scrape(char **head)
{
    char *body = NULL;
    int status = it_http_get(metrics_port(), "/metrics", head, &body);
    cr_assert_eq(status, 200, "GET /metrics: status %d", status);
    return body;
}

/* The value of series in text, which must be there. */
static double sample(const char *text, const char *series)
{
    double v = it_metric(text, series);
    cr_assert(!isnan(v), "no sample %s in:\n%s", series, text);
    return v;
}

static void expect_sample(const char *text, const char *series, double want)
{
    double v = sample(text, series);
    cr_assert_eq(v, want, "%s is %.17g, want %.17g", series, v, want);
}

/* Lines of text that start with prefix. */
static int count_lines(const char *text, const char *prefix)
{
    int n = 0;
    size_t len = strlen(prefix);
    for (const char *line = text; line != NULL && *line != '\0';) {
        n += strncmp(line, prefix, len) == 0;
        line = strchr(line, '\n');
        if (line != NULL)
            line++;
    }
    return n;
}

static void requests_series(char *out, size_t n, const char *method, const char *code)
{
    snprintf(out, n, "impresence_requests_total{method=\"%s\",code=\"%s\"}", method, code);
}

/* The known workload, on one client connection plus one raw connection that sends a garbled
 * frame (2 connections in all):
 *   BindRoute 1, 2, 3                        3 x OK
 *   QueryRoute 1..5                          3 x OK (hit), 2 x NOT_FOUND (miss)
 *   Deliver 1 (subscribed), Deliver 2 (not)  2 x OK: 1 delivered, 1 no subscriber; 2 hits
 *   QueryRoute user 0                        INVALID
 *   BindRoute 4 "has\ttab"                   INVALID
 *   method Frobnicate                        INVALID (method "unknown")
 *   a garbled RpcHeader                      1 protocol error, no answer */
enum { WORKLOAD_CONNECTIONS = 2 };

static void known_workload(void)
{
    struct pc_client *c = it_connect();
    for (int uid = 1; uid <= 3; uid++) {
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%d:7000", uid);
        Mpim__BindRouteResp *b = it_bind(c, uid, gw);
        cr_assert_eq(b->result->code, MPIM__CODE__OK);
        it_free(b);
    }
    for (int uid = 1; uid <= 5; uid++) {
        Mpim__QueryRouteResp *q = it_query(c, uid);
        cr_assert_eq((int)q->result->code, uid <= 3 ? MPIM__CODE__OK : MPIM__CODE__NOT_FOUND);
        it_free(q);
    }
    const char *ch[] = {"user:1", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    Mpim__DeliverResp *d = it_deliver(c, 1, "m1", 2, NULL);
    cr_assert(d->result->code == MPIM__CODE__OK && d->delivered);
    it_free(d);
    it_sub_expect(s, "user:1", "m1", 2);
    it_sub_close(s);
    d = it_deliver(c, 2, "m2", 2, NULL);
    cr_assert(d->result->code == MPIM__CODE__OK && !d->delivered);
    it_free(d);

    Mpim__QueryRouteResp *q = it_query(c, 0);
    cr_assert_eq(q->result->code, MPIM__CODE__INVALID);
    it_free(q);
    Mpim__BindRouteResp *b = it_bind(c, 4, "has\ttab");
    cr_assert_eq(b->result->code, MPIM__CODE__INVALID);
    it_free(b);
    Mpim__QueryRouteReq args = MPIM__QUERY_ROUTE_REQ__INIT;
    args.user_id = 1;
    it_send_frame(c, IT_SERVICE, "Frobnicate", &args.base);
    Mpim__ErrorResp *e = it_recv_error(c);
    cr_assert_eq(e->result->code, MPIM__CODE__INVALID);
    it_free(e);
    pc_close(c);

    int fd = it_tcp_connect(FX.srv.port);
    static const uint8_t garbled[] = {5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff};
    it_write_all(fd, garbled, sizeof(garbled));
    cr_assert_eq(it_wait_closed(fd, 3000 * IT_SLOW), 1, "a garbled frame did not close its connection");
    close(fd);
}

/* Scrape until connections_open is back to want (closes are seen by the server a moment later). */
static char *scrape_settled(int open_connections)
{
    double deadline = it_mono_ms() + 2000.0 * IT_SLOW;
    for (;;) {
        char *text = scrape(NULL);
        if (sample(text, "impresence_connections_open") == open_connections || it_mono_ms() > deadline)
            return text;
        free(text);
        it_sleep_ms(20);
    }
}

/* ------------------------------------------------- the exposition format */

#define MAX_FAMILIES 128
#define MAX_SERIES 1024

static bool valid_metric_name(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':' ||
                  (i > 0 && ch >= '0' && ch <= '9');
        if (!ok)
            return false;
    }
    return true;
}

/* {name="value",...}: returns the length of the label set, or 0 if it is malformed. */
static size_t parse_labels(const char *p)
{
    const char *start = p;
    if (*p++ != '{')
        return 0;
    if (*p == '}')
        return 2;
    for (;;) {
        const char *name = p;
        while (*p != '=' && *p != '\0' && *p != '\n')
            p++;
        if (*p != '=' || !valid_metric_name(name, (size_t)(p - name)) ||
            memchr(name, ':', (size_t)(p - name)))
            return 0;
        if (*++p != '"')
            return 0;
        for (p++; *p != '"'; p++) {
            if (*p == '\0' || *p == '\n')
                return 0;
            if (*p == '\\') {
                p++;
                if (*p != '\\' && *p != '"' && *p != 'n')
                    return 0;
            }
        }
        p++;
        if (*p == '}')
            return (size_t)(p + 1 - start);
        if (*p++ != ',')
            return 0;
    }
}

/* Text format 0.0.4 as far as a scraper cares: every line is a HELP, a TYPE or a sample; each
 * family has one HELP and one TYPE, before its samples; a family's samples are contiguous and
 * named after it (histograms: _bucket, _sum, _count); labels well-formed; values numbers; no
 * series twice; the text ends with a newline. */
static void check_exposition(const char *text)
{
    static char families[MAX_FAMILIES][96];
    static char series[MAX_SERIES][192];
    int nfam = 0, nseries = 0;
    char help_for[96] = "", cur[96] = "", cur_type[16] = "";
    size_t len = strlen(text);
    cr_assert(len > 0 && text[len - 1] == '\n', "the exposition does not end with a newline");
    int lineno = 0;
    for (const char *line = text; *line != '\0';) {
        const char *end = strchr(line, '\n');
        size_t n = (size_t)(end - line);
        lineno++;
        char buf[512];
        cr_assert_lt(n, sizeof(buf), "line %d too long", lineno);
        memcpy(buf, line, n);
        buf[n] = '\0';
        line = end + 1;
        cr_assert_gt(n, 0, "empty line %d", lineno);
        char fam[96], type[16];
        if (strncmp(buf, "# HELP ", 7) == 0) {
            cr_assert_eq(sscanf(buf, "# HELP %95s", fam), 1, "line %d: '%s'", lineno, buf);
            for (int i = 0; i < nfam; i++)
                cr_assert_str_neq(families[i], fam, "line %d: a second HELP for %s", lineno, fam);
            cr_assert_str_eq(help_for, "", "line %d: HELP %s after HELP %s without its TYPE", lineno, fam,
                             help_for);
            snprintf(help_for, sizeof(help_for), "%s", fam);
            continue;
        }
        if (strncmp(buf, "# TYPE ", 7) == 0) {
            cr_assert_eq(sscanf(buf, "# TYPE %95s %15s", fam, type), 2, "line %d: '%s'", lineno, buf);
            cr_assert(valid_metric_name(fam, strlen(fam)), "line %d: bad family name %s", lineno, fam);
            cr_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                          strcmp(type, "histogram") == 0 || strcmp(type, "summary") == 0 ||
                          strcmp(type, "untyped") == 0,
                      "line %d: unknown type %s", lineno, type);
            for (int i = 0; i < nfam; i++)
                cr_assert_str_neq(families[i], fam, "line %d: a second TYPE for %s: samples not contiguous",
                                  lineno, fam);
            cr_assert_str_eq(help_for, fam, "line %d: TYPE %s without its HELP just before", lineno, fam);
            help_for[0] = '\0';
            cr_assert_lt(nfam, MAX_FAMILIES);
            snprintf(families[nfam++], sizeof(families[0]), "%s", fam);
            snprintf(cur, sizeof(cur), "%s", fam);
            snprintf(cur_type, sizeof(cur_type), "%s", type);
            continue;
        }
        cr_assert_neq(buf[0], '#', "line %d: unknown comment '%s'", lineno, buf);
        cr_assert_str_eq(help_for, "", "line %d: a sample between HELP and TYPE", lineno);
        cr_assert_str_neq(cur, "", "line %d: a sample before any TYPE", lineno);
        size_t name_len = strcspn(buf, "{ ");
        cr_assert(valid_metric_name(buf, name_len), "line %d: bad metric name in '%s'", lineno, buf);
        char name[128];
        snprintf(name, sizeof(name), "%.*s", (int)name_len, buf);
        bool named_ok = strcmp(name, cur) == 0;
        if (strcmp(cur_type, "histogram") == 0) {
            size_t fl = strlen(cur);
            named_ok = strncmp(name, cur, fl) == 0 &&
                       (strcmp(name + fl, "_bucket") == 0 || strcmp(name + fl, "_sum") == 0 ||
                        strcmp(name + fl, "_count") == 0);
        }
        cr_assert(named_ok, "line %d: sample %s inside family %s (%s): samples not contiguous", lineno, name,
                  cur, cur_type);
        size_t at = name_len;
        if (buf[at] == '{') {
            size_t ll = parse_labels(buf + at);
            cr_assert_gt(ll, 0, "line %d: malformed labels in '%s'", lineno, buf);
            at += ll;
        }
        cr_assert_eq(buf[at], ' ', "line %d: no space before the value in '%s'", lineno, buf);
        char *vend;
        strtod(buf + at + 1, &vend);
        cr_assert(vend != buf + at + 1 && *vend == '\0', "line %d: value is not a number in '%s'", lineno,
                  buf);
        char key[192];
        snprintf(key, sizeof(key), "%.*s", (int)at, buf);
        for (int i = 0; i < nseries; i++)
            cr_assert_str_neq(series[i], key, "line %d: series %s twice", lineno, key);
        cr_assert_lt(nseries, MAX_SERIES);
        snprintf(series[nseries++], sizeof(series[0]), "%s", key);
    }
    cr_assert_str_eq(help_for, "", "HELP %s at the end without TYPE", help_for);
}

/* The latency histogram of method: buckets never decrease, +Inf equals _count; returns _count. */
static double check_histogram(const char *text, const char *method)
{
    static const char fam[] = "impresence_request_duration_seconds";
    char prefix[160];
    snprintf(prefix, sizeof(prefix), "%s_bucket{method=\"%s\",le=\"", fam, method);
    double last = 0;
    int buckets = 0;
    bool inf = false;
    for (const char *line = strstr(text, prefix); line != NULL; line = strstr(line + 1, prefix)) {
        const char *le = line + strlen(prefix);
        const char *sp = strchr(le, ' ');
        double v = strtod(sp + 1, NULL);
        cr_assert_geq(v, last, "%s: bucket le=%.*s (%g) below the one before (%g)", method,
                      (int)(sp - le - 2), le, v, last);
        last = v;
        buckets++;
        inf = strncmp(le, "+Inf\"}", 6) == 0;
    }
    cr_assert_gt(buckets, 1, "%s: no buckets", method);
    cr_assert(inf, "%s: the last bucket is not le=\"+Inf\"", method);
    char name[160];
    snprintf(name, sizeof(name), "%s_count{method=\"%s\"}", fam, method);
    double count = sample(text, name);
    cr_assert_eq(count, last, "%s: _count %g but the +Inf bucket %g", method, count, last);
    snprintf(name, sizeof(name), "%s_sum{method=\"%s\"}", fam, method);
    double sum = sample(text, name);
    cr_assert(sum >= 0 && (count > 0 || sum == 0), "%s: _sum %g with _count %g", method, sum, count);
    return count;
}

/* ------------------------------------------------------------- /metrics */

IT(ops, metrics_counts_a_known_workload_exactly)
{
    char *before = scrape_settled(0);
    double accepted0 = sample(before, "impresence_connections_accepted_total");
    /* Before any request: only each method's OK series, at 0. */
    cr_assert_eq(count_lines(before, "impresence_requests_total{"), PR_METHOD_COUNT,
                 "request series before any request:\n%s", before);
    expect_sample(before, "impresence_requests_total{method=\"QueryRoute\",code=\"OK\"}", 0);
    free(before);

    known_workload();
    char *text = scrape_settled(0);
    char s[160];
    static const struct {
        const char *method, *code;
        double n;
    } want[] = {
        {"BindRoute", "OK", 3},         {"BindRoute", "INVALID", 1},  {"QueryRoute", "OK", 3},
        {"QueryRoute", "NOT_FOUND", 2}, {"QueryRoute", "INVALID", 1}, {"Deliver", "OK", 2},
        {"UnbindRoute", "OK", 0},       {"Heartbeat", "OK", 0},       {"Stats", "OK", 0},
        {"BatchQueryRoute", "OK", 0},   {"BatchDeliver", "OK", 0},    {"GatewayHeartbeat", "OK", 0},
        {"DrainGateway", "OK", 0},      {"unknown", "INVALID", 1},
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        requests_series(s, sizeof(s), want[i].method, want[i].code);
        expect_sample(text, s, want[i].n);
    }
    cr_assert_eq(count_lines(text, "impresence_requests_total{"), (int)(sizeof(want) / sizeof(want[0])),
                 "request series other than the workload's:\n%s", text);
    expect_sample(text, "impresence_route_lookups_total{result=\"hit\"}", 5);
    expect_sample(text, "impresence_route_lookups_total{result=\"miss\"}", 2);
    expect_sample(text, "impresence_deliveries_total{result=\"delivered\"}", 1);
    expect_sample(text, "impresence_deliveries_total{result=\"no_subscriber\"}", 1);
    expect_sample(text, "impresence_deliver_retries_total", 0);
    expect_sample(text, "impresence_protocol_errors_total", 1);
    expect_sample(text, "impresence_connections_accepted_total", accepted0 + WORKLOAD_CONNECTIONS);
    expect_sample(text, "impresence_connections_open", 0);
    expect_sample(text, "impresence_connections_rejected_total", 0);
    expect_sample(text, "impresence_connections_idle_closed_total", 0);
    expect_sample(text, "impresence_connections_output_overflow_total", 0);
    expect_sample(text, "impresence_shards", 2);
    expect_sample(text, "impresence_redis_connections_up{role=\"cache\"}", 2);
    expect_sample(text, "impresence_redis_connections_up{role=\"queue\"}", 2);
    expect_sample(text, "impresence_redis_errors_total{role=\"cache\"}", 0);
    expect_sample(text, "impresence_shard_inflight{shard=\"0\"}", 0);
    expect_sample(text, "impresence_shard_inflight{shard=\"1\"}", 0);
    cr_assert_gt(sample(text, "impresence_received_bytes_total"), 0);
    cr_assert_gt(sample(text, "impresence_sent_bytes_total"), 0);
    free(text);
}

IT(ops, metrics_is_valid_text_format_with_one_type_line_per_family)
{
    known_workload();
    char *head = NULL;
    char *text = scrape(&head);
    cr_assert(strncmp(head, "HTTP/1.", 7) == 0, "status line '%s'", head);
    const char *ct = strstr(head, "Content-Type: ");
    cr_assert_not_null(ct, "no Content-Type in:\n%s", head);
    cr_assert(strncmp(ct + 14, "text/plain; version=0.0.4", 25) == 0, "Content-Type '%.60s'", ct + 14);
    check_exposition(text);
    /* Each family once: one TYPE line per family name. */
    static const char *const families[] = {
        "impresence_requests_total", "impresence_request_duration_seconds", "impresence_route_lookups_total",
        "impresence_redis_connections_up", "impresence_connections_accepted_total"};
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        char type_line[128];
        snprintf(type_line, sizeof(type_line), "# TYPE %s ", families[i]);
        cr_assert_eq(count_lines(text, type_line), 1, "%d TYPE lines for %s", count_lines(text, type_line),
                     families[i]);
    }
    cr_assert_eq(count_lines(text, "# TYPE impresence_request_duration_seconds histogram"), 1);
    free(head);
    free(text);
}

IT(ops, latency_histogram_count_per_method_equals_its_requests)
{
    known_workload();
    char *text = scrape_settled(0);
    static const char *const methods[] = {"BindRoute",   "QueryRoute", "Deliver",
                                          "UnbindRoute", "Heartbeat",  "Stats"};
    static const char *const codes[] = {"OK",       "INVALID",     "NOT_FOUND",
                                        "INTERNAL", "UNAVAILABLE", "OVERLOADED"};
    for (size_t m = 0; m < sizeof(methods) / sizeof(methods[0]); m++) {
        double requests = 0;
        for (size_t k = 0; k < sizeof(codes) / sizeof(codes[0]); k++) {
            char s[160];
            requests_series(s, sizeof(s), methods[m], codes[k]);
            double v = it_metric(text, s);
            requests += isnan(v) ? 0 : v;
        }
        double count = check_histogram(text, methods[m]);
        cr_assert_eq(count, requests, "%s: histogram _count %g, requests_total %g", methods[m], count,
                     requests);
    }
    free(text);
}

IT(ops, unknown_http_path_is_404)
{
    int status = it_http_get(metrics_port(), "/nope", NULL, NULL);
    cr_assert_eq(status, 404);
    /* A query string does not change the path. */
    status = it_http_get(metrics_port(), "/metrics?x=1", NULL, NULL);
    cr_assert_eq(status, 200);
}

/* ------------------------------------------------------- Stats RPC and CLI */

static Mpim__StatsResp *stats_rpc(struct pc_client *c)
{
    Mpim__StatsReq req = MPIM__STATS_REQ__INIT;
    ProtobufCMessage *m = NULL;
    cr_assert_eq(pc_call(c, PR_METHOD_STATS, &req.base, &m), 0, "Stats: %s", pc_error(c));
    Mpim__StatsResp *r = (Mpim__StatsResp *)m;
    cr_assert_not_null(r->result, "StatsResp without result");
    cr_assert_eq(r->result->code, MPIM__CODE__OK, "Stats: %s '%s'", pc_code_name(r->result->code),
                 r->result->msg);
    return r;
}

IT(ops, stats_rpc_returns_the_series_metrics_shows)
{
    known_workload();
    char *text = scrape_settled(0);
    struct pc_client *c = it_connect();
    Mpim__StatsResp *r = stats_rpc(c);
    /* Every name is a series /metrics shows, and every /metrics series is in the answer. */
    int samples = count_lines(text, "impresence_");
    cr_assert_eq((int)r->n_stats, samples, "Stats has %zu series, /metrics %d", r->n_stats, samples);
    int requests = 0;
    for (size_t i = 0; i < r->n_stats; i++) {
        const char *name = r->stats[i]->name;
        double shown = it_metric(text, name);
        cr_assert(!isnan(shown), "Stats series %s is not in /metrics", name);
        /* The counters of the workload cannot have moved; the Stats request itself is counted only
         * after its answer. */
        bool fixed = strncmp(name, "impresence_requests_total{", 26) == 0 ||
                     strncmp(name, "impresence_route_lookups_total{", 31) == 0 ||
                     strncmp(name, "impresence_deliveries_total{", 28) == 0 ||
                     strcmp(name, "impresence_protocol_errors_total") == 0;
        if (fixed)
            cr_assert_eq(r->stats[i]->value, shown, "%s: Stats %g, /metrics %g", name, r->stats[i]->value,
                         shown);
        requests += strncmp(name, "impresence_requests_total{", 26) == 0;
    }
    cr_assert_eq(requests, 14, "Stats has %d requests_total series", requests); /* as metrics_counts_... */
    it_free(r);
    /* Now the Stats request is counted, in both views. */
    r = stats_rpc(c);
    bool found = false;
    for (size_t i = 0; i < r->n_stats; i++) {
        if (strcmp(r->stats[i]->name, "impresence_requests_total{method=\"Stats\",code=\"OK\"}") == 0) {
            cr_assert_eq(r->stats[i]->value, 1);
            found = true;
        }
    }
    cr_assert(found);
    it_free(r);
    pc_close(c);
    free(text);
    text = scrape(NULL);
    expect_sample(text, "impresence_requests_total{method=\"Stats\",code=\"OK\"}", 2);
    free(text);
}

static int run_cli(const char *const *args, char **out, char **err)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", FX.srv.port);
    const char *argv[16] = {it_cli_bin(), "-p", port};
    int n = 3;
    for (int i = 0; args[i] != NULL; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    int code = it_run(argv, out, err, 10000 * IT_SLOW);
    cr_assert_neq(code, -1, "im-presence-cli did not finish");
    return code;
}

/* A line of the stats table: the series, padding, the value. */
static void expect_table_row(const char *out, const char *series, const char *value)
{
    const char *p = strstr(out, series);
    cr_assert_not_null(p, "no row for %s in:\n%s", series, out);
    cr_assert(p == out || p[-1] == '\n', "%s does not start a row", series);
    p += strlen(series);
    cr_assert_eq(*p, ' ', "row for %s: '%.40s'", series, p);
    while (*p == ' ')
        p++;
    size_t n = strlen(value);
    cr_assert(strncmp(p, value, n) == 0 && p[n] == '\n', "row for %s has value '%.20s', want %s", series, p,
              value);
}

IT(ops, cli_stats_prints_a_table_of_the_series_and_exits_0)
{
    known_workload();
    char *out, *err;
    static const char *const args[] = {"stats", NULL};
    int code = run_cli(args, &out, &err);
    cr_assert_eq(code, 0, "exit %d; stderr: %s", code, err);
    cr_assert(strncmp(out, "METRIC", 6) == 0, "no header line: %.80s", out);
    expect_table_row(out, "impresence_requests_total{method=\"BindRoute\",code=\"OK\"}", "3");
    expect_table_row(out, "impresence_requests_total{method=\"QueryRoute\",code=\"NOT_FOUND\"}", "2");
    expect_table_row(out, "impresence_requests_total{method=\"unknown\",code=\"INVALID\"}", "1");
    expect_table_row(out, "impresence_route_lookups_total{result=\"hit\"}", "5");
    expect_table_row(out, "impresence_protocol_errors_total", "1");
    expect_table_row(out, "impresence_request_duration_seconds_count{method=\"QueryRoute\"}", "6");
    cr_assert_null(strstr(out, "_bucket{"), "histogram buckets without --all");
    free(out);
    free(err);

    static const char *const all[] = {"stats", "--all", NULL};
    code = run_cli(all, &out, &err);
    cr_assert_eq(code, 0, "stats --all: exit %d; stderr: %s", code, err);
    cr_assert_not_null(
        strstr(out, "impresence_request_duration_seconds_bucket{method=\"QueryRoute\",le=\"+Inf\"}"),
        "stats --all without buckets");
    free(out);
    free(err);
}

static pid_t spawn_watch(const char *out, const char *const *watch_args)
{
    char redis[32], port[16];
    snprintf(redis, sizeof(redis), "127.0.0.1:%d", FX.queue.port);
    snprintf(port, sizeof(port), "%d", FX.srv.port);
    const char *argv[12] = {it_cli_bin(), "-p", port, "-r", redis, "watch"};
    int n = 6;
    for (int i = 0; watch_args[i] != NULL; i++)
        argv[n++] = watch_args[i];
    argv[n] = NULL;
    return it_spawn(argv, out, NULL);
}

static int expect_exit_code(pid_t pid, int timeout_ms)
{
    int status = it_wait_pid(pid, timeout_ms);
    cr_assert_neq(status, -1, "did not exit within %d ms", timeout_ms);
    cr_assert(WIFEXITED(status), "died of signal %d", WTERMSIG(status));
    return WEXITSTATUS(status);
}

IT(ops, cli_watch_prints_route_and_offline_lines_then_exits_0)
{
    const char *out = it_path("watch.out");
    static const char *const args[] = {"-n", "2", "42", NULL};
    pid_t pid = spawn_watch(out, args);
    free(it_wait_file_holds(out, "watching", 5000 * IT_SLOW));

    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 42, "gw-a:7000");
    cr_assert_eq(b->result->code, MPIM__CODE__OK);
    it_free(b);
    Mpim__UnbindRouteResp *u = it_unbind(c, 42, "gw-a:7000");
    cr_assert(u->result->code == MPIM__CODE__OK && u->unbound);
    it_free(u);
    pc_close(c);

    int code = expect_exit_code(pid, 5000 * IT_SLOW);
    char *text = it_read_file(out);
    cr_assert_eq(code, 0, "watch exited %d:\n%s", code, text);
    cr_assert_not_null(strstr(text, "watching presence:route, presence:kick and user:42 on "), "first line:\n%s", text);
    cr_assert_not_null(strstr(text, " route user=42 gateway=gw-a:7000\n"), "no route line:\n%s", text);
    cr_assert_not_null(strstr(text, " route user=42 offline\n"), "no offline line:\n%s", text);
    cr_assert_lt(strstr(text, "gateway=gw-a:7000"), strstr(text, "offline"), "events out of order:\n%s",
                 text);
    free(text);
}

IT(ops, cli_watch_without_uid_announces_the_route_and_kick_channels)
{
    const char *out = it_path("watch.out");
    static const char *const args[] = {"-n", "1", NULL};
    pid_t pid = spawn_watch(out, args);
    char *text = it_wait_file_holds(out, "watching", 5000 * IT_SLOW);
    char want[96];
    snprintf(want, sizeof(want), "watching presence:route and presence:kick on 127.0.0.1:%d\n", FX.queue.port);
    cr_assert_not_null(strstr(text, want), "first line '%s', want '%s'", text, want);
    free(text);
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 7, "gw-b:1");
    it_free(b);
    pc_close(c);
    cr_assert_eq(expect_exit_code(pid, 5000 * IT_SLOW), 0);
    text = it_read_file(out);
    cr_assert_not_null(strstr(text, " route user=7 gateway=gw-b:1\n"), "no route line:\n%s", text);
    free(text);
}

/* ---------------------------------------------------------- health and ready */

IT(ops_split, healthz_names_the_queue_while_it_is_down_and_recovers)
{
    fx_start_server();
    int port = metrics_port();
    char *body = NULL;
    int status = it_http_wait_status(port, "/healthz", 200, RECOVER_MS, &body);
    cr_assert_eq(status, 200, "/healthz %d at start: %s", status, body);
    cr_assert_str_eq(body, "ok\n");
    free(body);

    it_redis_stop(&FX.queue);
    double t0 = it_mono_ms();
    status = it_http_wait_status(port, "/healthz", 503, NOTICE_MS, &body);
    cr_assert_eq(status, 503, "/healthz still %d %.0f ms after the queue stopped: %s", status,
                 it_mono_ms() - t0, body);
    cr_assert_not_null(strstr(body, "queue"), "the 503 body does not name the queue: '%s'", body);
    free(body);
    /* Serving without the queue is not being unready: routes still work. */
    status = it_http_get(port, "/readyz", NULL, &body);
    cr_assert_eq(status, 200, "/readyz %d with only the queue down: %s", status, body);
    free(body);

    it_redis_restart(&FX.queue);
    t0 = it_mono_ms();
    status = it_http_wait_status(port, "/healthz", 200, RECOVER_MS, &body);
    cr_assert_eq(status, 200, "/healthz %d %.0f ms after the queue came back: %s", status, it_mono_ms() - t0,
                 body);
    free(body);
}

IT(ops_split, readyz_is_503_naming_the_cache_while_it_is_down)
{
    fx_start_server();
    int port = metrics_port();
    char *body = NULL;
    int status = it_http_wait_status(port, "/readyz", 200, RECOVER_MS, &body);
    cr_assert_eq(status, 200, "/readyz %d at start: %s", status, body);
    free(body);

    it_redis_kill(&FX.cache);
    status = it_http_wait_status(port, "/readyz", 503, NOTICE_MS, &body);
    cr_assert_eq(status, 503, "/readyz %d with the cache down: %s", status, body);
    cr_assert_not_null(strstr(body, "cache"), "the 503 body does not name the cache: '%s'", body);
    free(body);
    status = it_http_get(port, "/healthz", NULL, &body);
    cr_assert_eq(status, 503, "/healthz %d with the cache down", status);
    cr_assert_not_null(strstr(body, "cache"), "/healthz body '%s'", body);
    free(body);

    it_redis_restart(&FX.cache);
    status = it_http_wait_status(port, "/readyz", 200, RECOVER_MS, &body);
    cr_assert_eq(status, 200, "/readyz %d after the cache came back: %s", status, body);
    free(body);
}

IT(ops_redis, readyz_is_503_while_shutting_down)
{
    /* A request held by a hung Redis keeps the server draining after SIGTERM. */
    it_config_set(&FX.cfg, "redis_cache", "timeout", "%d", 10000 * IT_SLOW);
    it_config_set(&FX.cfg, "redis_queue", "timeout", "%d", 10000 * IT_SLOW);
    fx_start_server();
    int port = metrics_port();
    cr_assert_eq(it_http_wait_status(port, "/readyz", 200, RECOVER_MS, NULL), 200);
    struct pc_client *c = it_connect();
    it_redis_pause(&FX.cache);
    Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
    q.user_id = 1;
    cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
    cr_assert_eq(pc_flush(c), 0);
    it_wait_metric(&FX.srv, "impresence_shard_inflight", 1, NOTICE_MS);
    cr_assert_eq(kill(FX.srv.pid, SIGTERM), 0);
    char *body = NULL;
    int status = it_http_wait_status(port, "/readyz", 503, NOTICE_MS, &body);
    it_redis_resume(&FX.cache);
    cr_assert_eq(status, 503, "/readyz %d while shutting down: %s", status, body);
    cr_assert_not_null(strstr(body, "shutting down"), "/readyz body '%s'", body);
    free(body);
    ProtobufCMessage *m = NULL;
    cr_assert_eq(pc_recv(c, PR_METHOD_QUERY, &m), 0, "the request in flight was not answered: %s",
                 pc_error(c));
    protobuf_c_message_free_unpacked(m, NULL);
    pc_close(c);
    int st = it_server_stop(&FX.srv, SIGTERM, 5000 * IT_SLOW);
    cr_assert(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "no clean exit after SIGTERM");
}

/* ------------------------------------------------------- log file, SIGHUP */

IT(ops_redis, sighup_reopens_the_log_file_after_rotation)
{
    char log[PATH_MAX], rotated[PATH_MAX];
    snprintf(log, sizeof(log), "%s", it_path("presence.log"));
    snprintf(rotated, sizeof(rotated), "%s", it_path("presence.log.1"));
    it_config_set(&FX.cfg, "presence_service", "log_file", "%s", log);
    fx_start_server();
    free(it_wait_file_holds(log, "listening on", 5000 * IT_SLOW));
    cr_assert_eq(rename(log, rotated), 0);
    cr_assert_eq(kill(FX.srv.pid, SIGHUP), 0);
    char *text = it_wait_file_holds(log, "SIGHUP: log file reopened", 5000 * IT_SLOW);
    cr_assert_null(strstr(text, "listening on"), "the new log file holds the old lines:\n%s", text);
    free(text);
    /* Still serving, and the old file got nothing more. */
    struct pc_client *c = it_connect();
    Mpim__QueryRouteResp *q = it_query(c, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND);
    it_free(q);
    pc_close(c);
    text = it_read_file(rotated);
    cr_assert_not_null(strstr(text, "listening on"));
    cr_assert_null(strstr(text, "SIGHUP"), "the rotated file was written after SIGHUP:\n%s", text);
    free(text);
    /* Shutdown is logged to the new file. */
    it_server_stop_clean(&FX.srv);
    free(it_wait_file_holds(log, "stopped served=", 1000));
}

/* Whether the process's main thread blocks or catches sig (from /proc/PID/status); false once it
 * has exited. */
static bool signal_blocked_or_caught(pid_t pid, int sig)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    char *text = it_read_file(path);
    if (text == NULL)
        return false;
    unsigned long long blk = 0, cgt = 0;
    const char *b = strstr(text, "\nSigBlk:"), *c = strstr(text, "\nSigCgt:");
    if (b != NULL)
        blk = strtoull(b + 8, NULL, 16);
    if (c != NULL)
        cgt = strtoull(c + 8, NULL, 16);
    free(text);
    return ((blk | cgt) >> (sig - 1) & 1) != 0;
}

IT(ops_redis, sighup_during_start_up_is_held_not_fatal)
{
    /* SIGHUP's default action ends a process. From the first line of main the server holds it
     * (blocked) until its handler runs in the acceptor loop: one that arrives while the server
     * is starting must be acted on once it runs, not kill it. (Before main, in the dynamic
     * loader, no process can do anything about it.) */
    char log[PATH_MAX];
    snprintf(log, sizeof(log), "%s", it_path("presence.log"));
    it_config_set(&FX.cfg, "presence_service", "log_file", "%s", log);
    it_config_set(&FX.cfg, "presence_service", "port", "%d", it_free_port());
    pid_t pid = it_server_spawn(&FX.srv, &FX.cfg, NULL);
    double deadline = it_mono_ms() + 10000.0 * IT_SLOW;
    while (!signal_blocked_or_caught(pid, SIGHUP))
        cr_assert_lt(it_mono_ms(), deadline, "the server never blocked or caught SIGHUP");
    cr_assert_eq(kill(pid, SIGHUP), 0);
    cr_assert_eq(it_server_wait_ready(&FX.srv, 10000 * IT_SLOW), 0, "a SIGHUP during start-up ended the server");
    free(it_wait_file_holds(log, "SIGHUP: log file reopened", 5000 * IT_SLOW));
    struct pc_client *c = it_connect();
    Mpim__QueryRouteResp *q = it_query(c, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND);
    it_free(q);
    pc_close(c);
}

/* ----------------------------------------------------------- --check-config */

IT(ops_redis, check_config_prints_the_effective_configuration)
{
    it_config_set(&FX.cfg, "presence_service", "port", "%d", it_free_port());
    it_config_set(&FX.cfg, "presence_service", "thread_count", "3");
    it_config_set(&FX.cfg, "presence_service", "max_output_bytes", "2m");
    it_config_set(&FX.cfg, "redis_cache", "password", "hunter2");
    const char *conf = it_path("check.conf");
    it_config_write(&FX.cfg, conf);
    const char *argv[] = {it_server_bin(), "--check-config", "-c", conf, NULL};
    char *out, *err;
    int code = it_run(argv, &out, &err, 10000 * IT_SLOW);
    cr_assert_eq(code, 0, "exit %d; stderr: %s", code, err);
    cr_assert_not_null(strstr(out, "thread_count = 3\n"), "output:\n%s", out);
    cr_assert_not_null(strstr(out, "max_output_bytes = 2097152\n"), "sizes in bytes:\n%s", out);
    /* Keys the file leaves out show their defaults. */
    cr_assert_not_null(strstr(out, "max_inflight = 1024\n"), "output:\n%s", out);
    cr_assert_not_null(strstr(out, "queue_depth = 65536\n"), "output:\n%s", out);
    cr_assert_not_null(strstr(out, "[metrics]\n"), "output:\n%s", out);
    cr_assert_null(strstr(out, "hunter2"), "--check-config printed the Redis password");
    cr_assert_not_null(strstr(out, "password = (set)\n"), "output:\n%s", out);
    free(out);
    free(err);
}

IT(ops_redis, check_config_exits_2_on_an_invalid_value)
{
    it_config_set(&FX.cfg, "presence_service", "port", "%d", it_free_port());
    it_config_set(&FX.cfg, "presence_service", "max_output_bytes", "12");
    const char *conf = it_path("bad.conf");
    it_config_write(&FX.cfg, conf);
    const char *argv[] = {it_server_bin(), "--check-config", "-c", conf, NULL};
    char *out, *err;
    int code = it_run(argv, &out, &err, 10000 * IT_SLOW);
    cr_assert_eq(code, 2, "exit %d on max_output_bytes = 12 (minimum 1024); stdout: %s", code, out);
    cr_assert_not_null(strstr(err, "max_output_bytes"), "stderr does not name the key: %s", err);
    cr_assert_not_null(strstr(err, conf), "stderr does not name the file: %s", err);
    free(out);
    free(err);
}
