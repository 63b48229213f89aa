/* metrics/collect: every series /metrics and Stats report, and the /healthz and /readyz verdicts,
 * over a real acceptor and real shards that are initialised (rings, links, counters) but whose
 * threads never run. The test plays the counters' writer thread. */
#include <criterion/criterion.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "core/config.h"
#include "core/request.h"
#include "leak.h"
#include "metrics/collect.h"
#include "net/acceptor.h"
#include "presence.pb-c.h"
#include "registrar/registrar.h"
#include "shards/shard.h"

#define NSHARDS 2
#define TAG(i) ((void *)(uintptr_t)((i) + 1)) /* a request pointer that is never dereferenced */

static struct presence_conf conf;
static struct ev_loop *loop;
static struct acceptor acc;
static struct shard shards[NSHARDS];
static struct redis_gauges gauges;
static struct metrics_view view;

static void setup(void)
{
    config_defaults(&conf);
    conf.port = 0; /* any free port: the listener is opened, never started */
    conf.max_connections = 4;
    conf.queue_depth = 8;
    conf.shards = NSHARDS;
    loop = ev_default_loop(EVFLAG_AUTO);
    cr_assert_not_null(loop);
    cr_assert_eq(acceptor_init(&acc, &conf, loop, shards, NSHARDS), 0);
    for (int i = 0; i < NSHARDS; i++)
        cr_assert_eq(shard_init(&shards[i], i, &conf, loop, &acc.answered[i]), 0);
    view = (struct metrics_view){&conf, &acc, shards, NSHARDS, &gauges, NULL};
}

static void teardown(void)
{
    acceptor_destroy(&acc);
    for (int i = 0; i < NSHARDS; i++)
        shard_destroy(&shards[i]);
    ev_loop_destroy(loop);
}

TestSuite(collect, .init = setup, .fini = teardown);

/* --- what metrics_collect emitted --- */

struct sample {
    char family[64];
    char type[12];
    char name[80];
    char labels[128];
    double value;
};

#define MAX_SAMPLES 512
static struct sample samples[MAX_SAMPLES];
static int nsamples;

static void record(void *ctx, const char *family, const char *type, const char *help, const char *name,
                   const char *labels, double value)
{
    (void)ctx;
    cr_assert_lt(nsamples, MAX_SAMPLES);
    cr_assert_str_neq(help, "", "%s has no HELP", family);
    struct sample *s = &samples[nsamples++];
    cr_assert_lt((size_t)snprintf(s->family, sizeof(s->family), "%s", family), sizeof(s->family));
    cr_assert_lt((size_t)snprintf(s->type, sizeof(s->type), "%s", type), sizeof(s->type));
    cr_assert_lt((size_t)snprintf(s->name, sizeof(s->name), "%s", name), sizeof(s->name));
    cr_assert_lt((size_t)snprintf(s->labels, sizeof(s->labels), "%s", labels), sizeof(s->labels));
    s->value = value;
}

static void collect(void)
{
    nsamples = 0;
    metrics_collect(&view, record, NULL);
}

/* The one sample with this name and labels (NULL: none). */
static const struct sample *find(const char *name, const char *labels)
{
    const struct sample *found = NULL;
    for (int i = 0; i < nsamples; i++) {
        if (strcmp(samples[i].name, name) == 0 && strcmp(samples[i].labels, labels) == 0) {
            cr_assert_null(found, "%s{%s} emitted twice", name, labels);
            found = &samples[i];
        }
    }
    return found;
}

static double value_of(const char *name, const char *labels)
{
    const struct sample *s = find(name, labels);
    cr_assert_not_null(s, "no sample %s{%s}", name, labels);
    return s->value;
}

static const char *const families[] = {
    "impresence_requests_total",
    "impresence_request_duration_seconds",
    "impresence_route_lookups_total",
    "impresence_deliveries_total",
    "impresence_deliver_retries_total",
    "impresence_gateway_drains_total",
    "impresence_gateway_drained_sessions_total",
    "impresence_near_cache_hits_total",
    "impresence_near_cache_misses_total",
    "impresence_near_cache_invalidations_total",
    "impresence_near_cache_flushes_total",
    "impresence_near_cache_entries",
    "impresence_near_cache_tracked",
    "impresence_redis_errors_total",
    "impresence_redis_reconnects_total",
    "impresence_redis_connections_up",
    "impresence_redis_cluster_redirects_total",
    "impresence_redis_cluster_retries_total",
    "impresence_redis_cluster_map_refreshes_total",
    "impresence_redis_cluster_masters",
    "impresence_redis_used_memory_bytes",
    "impresence_cache_keys",
    "impresence_online_users",
    "impresence_shard_inflight",
    "impresence_shard_inbox_depth",
    "impresence_connections_open",
    "impresence_connections_accepted_total",
    "impresence_connections_rejected_total",
    "impresence_connections_idle_closed_total",
    "impresence_connections_output_overflow_total",
    "impresence_protocol_errors_total",
    "impresence_received_bytes_total",
    "impresence_sent_bytes_total",
    "impresence_shards",
    "impresence_zookeeper_registered",
};
#define NFAMILIES (sizeof(families) / sizeof(families[0]))

/* Families come in this order, each in one contiguous run (Prometheus' text format needs that). */
static void assert_family_order(void)
{
    size_t f = 0;
    for (int i = 0; i < nsamples; i++) {
        if (strcmp(samples[i].family, families[f]) == 0)
            continue;
        f++;
        cr_assert_lt(f, NFAMILIES, "sample %d: family %s after the last one", i, samples[i].family);
        cr_assert_str_eq(samples[i].family, families[f], "sample %d (%s{%s})", i, samples[i].name,
                         samples[i].labels);
    }
    cr_assert_eq(f, NFAMILIES - 1, "only %zu of %zu families emitted", f + 1, NFAMILIES);
}

/* One OK series per method, each method's 17 buckets + sum + count, 5 routing, 10 Redis, 10 Redis
 * Cluster (2 roles x (2 redirect kinds + retries + refreshes + masters)), 2 x 2 per shard, 8
 * connection series, the shard count and the ZooKeeper registration gauge. */
_Static_assert(PR_METHOD_COUNT == 10, "a method was added: check its series below");
#define GATEWAY_DRAIN_SAMPLES 3 /* drains by how (manual, lease), drained sessions */
#define NEAR_CACHE_SAMPLES 6    /* hits, misses, invalidations, flushes, entries, tracked */
#define ZERO_STATE_SAMPLES                                                                                   \
    (PR_METHOD_COUNT + PR_METHOD_COUNT * 19 + 5 + GATEWAY_DRAIN_SAMPLES + NEAR_CACHE_SAMPLES + 10 + 10 +   \
     2 * NSHARDS + 8 + 1 + 1)

Test(collect, zero_state_series)
{
    collect();
    cr_assert_eq(nsamples, ZERO_STATE_SAMPLES);
    assert_family_order();
    /* Only each method's OK, at 0: no "unknown" row, no other code. */
    for (int m = 0; m < PR_METHOD_COUNT; m++) {
        const struct sample *s = &samples[m];
        char labels[96];
        snprintf(labels, sizeof(labels), "method=\"%s\",code=\"OK\"", request_method_name(m));
        cr_assert_str_eq(s->name, "impresence_requests_total");
        cr_assert_str_eq(s->type, "counter");
        cr_assert_str_eq(s->labels, labels);
        cr_assert_eq(s->value, 0.0);
    }
    for (int i = PR_METHOD_COUNT; i < nsamples; i++)
        if (strcmp(samples[i].name, "impresence_shards") != 0)
            cr_assert_eq(samples[i].value, 0.0, "%s{%s} = %g", samples[i].name, samples[i].labels,
                         samples[i].value);
    cr_assert_eq(value_of("impresence_shards", ""), NSHARDS);
    cr_assert_str_eq(samples[nsamples - 1].type, "gauge");
}

/* §9: 0 without a registrar ([zookeeper] off), else what the registrar thread last wrote. */
Test(collect, zookeeper_registered_gauge)
{
    collect();
    cr_assert_eq(value_of("impresence_zookeeper_registered", ""), 0);
    static struct registrar reg; /* never started: the test plays its thread */
    view.registrar = &reg;
    counter_set(&reg.registered, 1);
    collect();
    cr_assert_eq(value_of("impresence_zookeeper_registered", ""), 1);
    cr_assert_eq(nsamples, ZERO_STATE_SAMPLES, "one series either way");
    counter_set(&reg.registered, 0);
    collect();
    cr_assert_eq(value_of("impresence_zookeeper_registered", ""), 0);
}

/* Every counter is the sum of its acceptor and per-shard parts; per-shard gauges stay apart. */
Test(collect, sums_shards_and_acceptor)
{
    counter_add(&shards[0].counters.requests[PR_METHOD_QUERY][MPIM__CODE__OK], 3);
    counter_add(&shards[1].counters.requests[PR_METHOD_QUERY][MPIM__CODE__OK], 4);
    counter_add(&shards[1].counters.requests[PR_METHOD_BIND][MPIM__CODE__UNAVAILABLE], 2);
    counter_add(&acc.counters.answered_here[PR_METHOD_QUERY][MPIM__CODE__INVALID], 2);
    counter_add(&acc.counters.answered_here[PR_METHOD_STATS][MPIM__CODE__OK], 1);
    /* Batch calls are counted once each, by the acceptor that gathers them (§7). */
    counter_add(&acc.counters.answered_here[PR_METHOD_BATCH_QUERY][MPIM__CODE__OK], 3);
    counter_add(&acc.counters.answered_here[PR_METHOD_BATCH_DELIVER][MPIM__CODE__INVALID], 1);
    counter_add(&acc.counters.answered_here[PR_METHOD_COUNT][MPIM__CODE__INVALID], 5);
    counter_add(&shards[0].counters.route_hits, 1);
    counter_add(&shards[1].counters.route_hits, 2);
    counter_add(&shards[0].counters.route_misses, 4);
    counter_add(&shards[1].counters.delivered, 5);
    counter_add(&shards[0].counters.undelivered, 6);
    counter_add(&shards[1].counters.deliver_retries, 7);
    counter_add(&shards[0].counters.requests[PR_METHOD_DRAIN_GATEWAY][MPIM__CODE__OK], 1);
    counter_add(&shards[0].counters.drains[0], 2);
    counter_add(&shards[1].counters.drains[0], 1);
    counter_add(&shards[0].counters.drains[1], 4);
    counter_add(&shards[0].counters.drained_sessions, 100);
    counter_add(&shards[1].counters.drained_sessions, 23);
    counter_add(&shards[0].counters.nc_hits, 30);
    counter_add(&shards[1].counters.nc_hits, 12);
    counter_add(&shards[1].counters.nc_misses, 8);
    counter_add(&shards[0].counters.nc_invalidations, 6);
    counter_add(&shards[1].counters.nc_flushes, 2);
    counter_set(&shards[0].counters.nc_entries, 100);
    counter_set(&shards[1].counters.nc_entries, 50);
    counter_set(&shards[0].counters.nc_tracked, 1);
    counter_set(&shards[1].counters.nc_tracked, 1);
    counter_set(&shards[0].cache.single.own.up, 1);
    counter_set(&shards[1].cache.single.own.up, 1);
    counter_set(&shards[0].queue.single.own.up, 1);
    counter_add(&shards[0].cache.single.own.errors, 2);
    counter_add(&shards[1].cache.single.own.errors, 3);
    counter_add(&shards[0].cache.single.own.reconnects, 1);
    counter_add(&shards[1].queue.single.own.errors, 10);
    counter_add(&shards[1].queue.single.own.reconnects, 4);
    counter_set(&gauges.used_memory[0], 1000);
    counter_set(&gauges.used_memory[1], 2000);
    counter_set(&gauges.cache_keys, 7);
    counter_set(&acc.inflight[1], 5);
    cr_assert(shard_submit(&shards[1], TAG(0)));
    cr_assert(shard_submit(&shards[1], TAG(1)));
    counter_set(&acc.counters.open, 2);
    counter_add(&acc.counters.accepted, 10);
    counter_add(&acc.counters.rejected, 1);
    counter_add(&acc.counters.idle_closed, 3);
    counter_add(&acc.counters.output_overflows, 4);
    counter_add(&acc.counters.protocol_errors, 5);
    counter_add(&acc.counters.bytes_in, 1000);
    counter_add(&acc.counters.bytes_out, 2000);

    collect();
    assert_family_order();
    /* Request series, exactly and in order: each method's OK even at 0, other codes only when
     * non-zero, unknown methods last. */
    static const struct {
        const char *labels;
        double value;
    } want[] = {
        {"method=\"BindRoute\",code=\"OK\"", 0},        {"method=\"BindRoute\",code=\"UNAVAILABLE\"", 2},
        {"method=\"QueryRoute\",code=\"OK\"", 7},       {"method=\"QueryRoute\",code=\"INVALID\"", 2},
        {"method=\"Deliver\",code=\"OK\"", 0},          {"method=\"UnbindRoute\",code=\"OK\"", 0},
        {"method=\"Heartbeat\",code=\"OK\"", 0},        {"method=\"Stats\",code=\"OK\"", 1},
        {"method=\"BatchQueryRoute\",code=\"OK\"", 3}, {"method=\"BatchDeliver\",code=\"OK\"", 0},
        {"method=\"BatchDeliver\",code=\"INVALID\"", 1},
        {"method=\"GatewayHeartbeat\",code=\"OK\"", 0}, {"method=\"DrainGateway\",code=\"OK\"", 1},
        {"method=\"unknown\",code=\"INVALID\"", 5},
    };
    size_t nwant = sizeof(want) / sizeof(want[0]);
    cr_assert_eq(nsamples, ZERO_STATE_SAMPLES - PR_METHOD_COUNT + (int)nwant);
    for (size_t i = 0; i < nwant; i++) {
        cr_assert_str_eq(samples[i].name, "impresence_requests_total", "sample %zu", i);
        cr_assert_str_eq(samples[i].labels, want[i].labels, "sample %zu", i);
        cr_assert_eq(samples[i].value, want[i].value, "%s", want[i].labels);
    }
    cr_assert_str_eq(samples[nwant].family, "impresence_request_duration_seconds");

    cr_assert_eq(value_of("impresence_route_lookups_total", "result=\"hit\""), 3);
    cr_assert_eq(value_of("impresence_route_lookups_total", "result=\"miss\""), 4);
    cr_assert_eq(value_of("impresence_deliveries_total", "result=\"delivered\""), 5);
    cr_assert_eq(value_of("impresence_deliveries_total", "result=\"no_subscriber\""), 6);
    cr_assert_eq(value_of("impresence_deliver_retries_total", ""), 7);
    cr_assert_eq(value_of("impresence_gateway_drains_total", "how=\"manual\""), 3);
    cr_assert_eq(value_of("impresence_gateway_drains_total", "how=\"lease\""), 4);
    cr_assert_eq(value_of("impresence_gateway_drained_sessions_total", ""), 123);
    cr_assert_eq(value_of("impresence_near_cache_hits_total", ""), 42);
    cr_assert_eq(value_of("impresence_near_cache_misses_total", ""), 8);
    cr_assert_eq(value_of("impresence_near_cache_invalidations_total", ""), 6);
    cr_assert_eq(value_of("impresence_near_cache_flushes_total", ""), 2);
    cr_assert_eq(value_of("impresence_near_cache_entries", ""), 150);
    cr_assert_eq(value_of("impresence_near_cache_tracked", ""), 2);
    cr_assert_eq(value_of("impresence_redis_errors_total", "role=\"cache\""), 5);
    cr_assert_eq(value_of("impresence_redis_errors_total", "role=\"queue\""), 10);
    cr_assert_eq(value_of("impresence_redis_reconnects_total", "role=\"cache\""), 1);
    cr_assert_eq(value_of("impresence_redis_reconnects_total", "role=\"queue\""), 4);
    cr_assert_eq(value_of("impresence_redis_connections_up", "role=\"cache\""), 2);
    cr_assert_eq(value_of("impresence_redis_connections_up", "role=\"queue\""), 1);
    cr_assert_eq(value_of("impresence_redis_used_memory_bytes", "role=\"cache\""), 1000);
    cr_assert_eq(value_of("impresence_redis_used_memory_bytes", "role=\"queue\""), 2000);
    cr_assert_eq(value_of("impresence_cache_keys", ""), 7);
    cr_assert_eq(value_of("impresence_online_users", ""), 2); /* keys / 3, rounded down */
    cr_assert_eq(value_of("impresence_shard_inflight", "shard=\"0\""), 0);
    cr_assert_eq(value_of("impresence_shard_inflight", "shard=\"1\""), 5);
    cr_assert_eq(value_of("impresence_shard_inbox_depth", "shard=\"0\""), 0);
    cr_assert_eq(value_of("impresence_shard_inbox_depth", "shard=\"1\""), 2);
    cr_assert_eq(value_of("impresence_connections_open", ""), 2);
    cr_assert_eq(value_of("impresence_connections_accepted_total", ""), 10);
    cr_assert_eq(value_of("impresence_connections_rejected_total", ""), 1);
    cr_assert_eq(value_of("impresence_connections_idle_closed_total", ""), 3);
    cr_assert_eq(value_of("impresence_connections_output_overflow_total", ""), 4);
    cr_assert_eq(value_of("impresence_protocol_errors_total", ""), 5);
    cr_assert_eq(value_of("impresence_received_bytes_total", ""), 1000);
    cr_assert_eq(value_of("impresence_sent_bytes_total", ""), 2000);
    cr_assert_eq(value_of("impresence_shards", ""), NSHARDS);
    cr_assert_str_eq(find("impresence_redis_connections_up", "role=\"cache\"")->type, "gauge");
    cr_assert_str_eq(find("impresence_redis_errors_total", "role=\"cache\"")->type, "counter");
}

/* The histogram: cumulative buckets with Prometheus' le labels, then _sum in seconds and _count. */
Test(collect, latency_histogram_is_cumulative)
{
    struct latency_hist *h = &acc.counters.latency[PR_METHOD_QUERY];
    latency_record(h, 40000);       /* le=5e-05 */
    latency_record(h, 100000);      /* le=0.0001, on the edge */
    latency_record(h, 3000000000);  /* le=5 */
    latency_record(h, 10000000000); /* +Inf */
    collect();
    static const struct {
        const char *le;
        double cumulative;
    } want[] = {{"5e-05", 1}, {"0.0001", 2}, {"0.00025", 2}, {"0.0005", 2}, {"0.001", 2}, {"0.0025", 2},
                {"0.005", 2}, {"0.01", 2},   {"0.025", 2},   {"0.05", 2},   {"0.1", 2},   {"0.25", 2},
                {"0.5", 2},   {"1", 2},      {"2.5", 2},     {"5", 3},      {"+Inf", 4}};
    const struct sample *first = find("impresence_request_duration_seconds_bucket",
                                      "method=\"QueryRoute\",le=\"5e-05\"");
    cr_assert_not_null(first);
    for (size_t b = 0; b < sizeof(want) / sizeof(want[0]); b++) {
        char labels[96];
        snprintf(labels, sizeof(labels), "method=\"QueryRoute\",le=\"%s\"", want[b].le);
        cr_assert_str_eq(first[b].name, "impresence_request_duration_seconds_bucket", "bucket %zu", b);
        cr_assert_str_eq(first[b].labels, labels, "bucket %zu", b);
        cr_assert_eq(first[b].value, want[b].cumulative, "le=%s", want[b].le);
        cr_assert_str_eq(first[b].type, "histogram");
    }
    const struct sample *sum = &first[LATENCY_BUCKETS + 1], *count = &first[LATENCY_BUCKETS + 2];
    cr_assert_str_eq(sum->name, "impresence_request_duration_seconds_sum");
    cr_assert_str_eq(sum->labels, "method=\"QueryRoute\"");
    cr_assert_float_eq(sum->value, 13.00014, 1e-9);
    cr_assert_str_eq(count->name, "impresence_request_duration_seconds_count");
    cr_assert_str_eq(count->labels, "method=\"QueryRoute\"");
    cr_assert_eq(count->value, 4);
    /* Other methods saw nothing. */
    cr_assert_eq(value_of("impresence_request_duration_seconds_count", "method=\"BindRoute\""), 0);
    cr_assert_eq(value_of("impresence_request_duration_seconds_bucket", "method=\"Stats\",le=\"+Inf\""), 0);
}

/* The text exposition: HELP and TYPE once per family, labels in braces, none when empty. */
Test(collect, prometheus_text)
{
    counter_add(&shards[0].counters.route_hits, 3);
    counter_add(&shards[1].counters.route_misses, 4);
    counter_set(&gauges.cache_keys, 7);
    size_t len = 0;
    char *text = metrics_render(&view, &len);
    cr_assert_not_null(text);
    cr_assert_eq(strlen(text), len);
    cr_assert_not_null(strstr(text, "# HELP impresence_route_lookups_total QueryRoute/Deliver route lookups: "
                                    "hit = the user had a route.\n"
                                    "# TYPE impresence_route_lookups_total counter\n"
                                    "impresence_route_lookups_total{result=\"hit\"} 3\n"
                                    "impresence_route_lookups_total{result=\"miss\"} 4\n"
                                    "# HELP impresence_deliveries_total "),
                   "%s", text);
    cr_assert_not_null(strstr(text, "\n# TYPE impresence_online_users gauge\nimpresence_online_users 2\n"));
    cr_assert_not_null(strstr(text, "\nimpresence_request_duration_seconds_bucket{method=\"Deliver\",le=\"+Inf\"} 0\n"));
    cr_assert_eq(strncmp(text, "# HELP impresence_requests_total ", 33), 0);
    cr_assert_eq(text[len - 1], '\n');
    size_t types = 0;
    for (const char *p = text; (p = strstr(p, "# TYPE ")) != NULL; p++)
        types++;
    cr_assert_eq(types, NFAMILIES);
    for (size_t f = 0; f < NFAMILIES; f++) {
        char line[128];
        snprintf(line, sizeof(line), "# TYPE %s ", families[f]);
        const char *at = strstr(text, line);
        cr_assert_not_null(at, "no %s", line);
        cr_assert_null(strstr(at + 1, line), "%s twice", line);
    }
    free(text);
    expect_no_leaks();
}

/* Stats carries exactly the samples /metrics shows, named name{labels}, in the same order. */
Test(collect, stats_rpc_matches_collect)
{
    counter_add(&shards[1].counters.requests[PR_METHOD_DELIVER][MPIM__CODE__NOT_FOUND], 9);
    counter_set(&acc.inflight[0], 3);
    collect();
    struct pr_request *req = calloc(1, sizeof(*req));
    cr_assert_not_null(req);
    metrics_pack_stats(&view, req);
    cr_assert_eq(req->code, MPIM__CODE__OK, "%s", req->msg);
    cr_assert_not_null(req->packed);
    Mpim__StatsResp *r = mpim__stats_resp__unpack(NULL, req->packed_len, req->packed);
    cr_assert_not_null(r);
    cr_assert_eq(r->n_stats, (size_t)nsamples);
    for (size_t i = 0; i < r->n_stats; i++) {
        char name[256];
        const struct sample *s = &samples[i];
        snprintf(name, sizeof(name), "%s%s%s%s", s->name, s->labels[0] ? "{" : "", s->labels,
                 s->labels[0] ? "}" : "");
        cr_assert_str_eq(r->stats[i]->name, name, "stat %zu", i);
        cr_assert_eq(r->stats[i]->value, s->value, "%s", name);
    }
    bool seen = false;
    for (size_t i = 0; i < r->n_stats; i++)
        if (strcmp(r->stats[i]->name, "impresence_requests_total{method=\"Deliver\",code=\"NOT_FOUND\"}") == 0)
            seen = r->stats[i]->value == 9;
    cr_assert(seen);
    mpim__stats_resp__free_unpacked(r, NULL);
    request_reset(req);
    free(req);
    expect_no_leaks();
}

static void expect(int (*check)(const struct metrics_view *, char *, size_t), int rc, const char *why)
{
    char got[128];
    cr_assert_eq(check(&view, got, sizeof(got)), rc, "why: %s", got);
    cr_assert_str_eq(got, why);
}

/* /healthz needs every link up and names the first one down; /readyz needs only the cache links
 * and fails first of all while shutting down. */
Test(collect, health_and_ready_reasons)
{
    expect(metrics_health, -1, "shard 0: cache redis down");
    expect(metrics_ready, -1, "shard 0: cache redis down");
    counter_set(&shards[0].cache.single.own.up, 1);
    expect(metrics_health, -1, "shard 0: queue redis down");
    expect(metrics_ready, -1, "shard 1: cache redis down");
    counter_set(&shards[0].queue.single.own.up, 1);
    expect(metrics_health, -1, "shard 1: cache redis down");
    counter_set(&shards[1].cache.single.own.up, 1);
    expect(metrics_health, -1, "shard 1: queue redis down");
    expect(metrics_ready, 0, "ok");
    counter_set(&shards[1].queue.single.own.up, 1);
    expect(metrics_health, 0, "ok");
    counter_set(&shards[0].queue.single.own.up, 0);
    expect(metrics_health, -1, "shard 0: queue redis down");
    expect(metrics_ready, 0, "ok");
    counter_set(&acc.counters.draining, 1);
    expect(metrics_ready, -1, "shutting down");
    counter_set(&shards[0].queue.single.own.up, 1);
    expect(metrics_health, 0, "ok"); /* health is about Redis only */
    /* A short buffer gets a truncated reason, still terminated. */
    char small[8];
    cr_assert_eq(metrics_ready(&view, small, sizeof(small)), -1);
    cr_assert_str_eq(small, "shuttin");
}
