#include "metrics/collect.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/request.h"
#include "net/acceptor.h"
#include "presence.pb-c.h"
#include "registrar/registrar.h"
#include "shards/shard.h"

/* One collection's input: each module's stats copied once through its reader. */
struct snapshot {
    const struct metrics_view *v;
    struct acceptor_stats acc;
    struct shard_stats shards; /* summed over all shards */
};

static void requests(const struct snapshot *sn, metrics_emit_fn *emit, void *ctx)
{
    static const char fam[] = "impresence_requests_total";
    static const char help[] = "Requests answered, by method and result code.";
    char labels[96];
    for (int m = 0; m <= PR_METHOD_COUNT; m++) {
        for (int code = 0; code < PR_CODE_COUNT; code++) {
            uint64_t n = sn->acc.answered_here[m][code];
            if (m < PR_METHOD_COUNT)
                n += sn->shards.requests[m][code];
            /* Zero series are left out, except each method's OK, so that rates start at 0. */
            if (n == 0 && (code != MPIM__CODE__OK || m == PR_METHOD_COUNT))
                continue;
            snprintf(labels, sizeof(labels), "method=\"%s\",code=\"%s\"",
                     m < PR_METHOD_COUNT ? request_method_name(m) : "unknown", request_code_name(code));
            emit(ctx, fam, "counter", help, fam, labels, (double)n);
        }
    }
}

static void latency(const struct snapshot *sn, metrics_emit_fn *emit, void *ctx)
{
#define LATENCY_FAMILY "impresence_request_duration_seconds"
    static const char fam[] = LATENCY_FAMILY;
    static const char help[] = "Server-side latency, from frame read to response queued for writing.";
    char labels[96];
    for (int m = 0; m < PR_METHOD_COUNT; m++) {
        const struct latency_snapshot *h = &sn->acc.latency[m];
        const char *method = request_method_name(m);
        uint64_t cumulative = 0;
        for (int b = 0; b <= LATENCY_BUCKETS; b++) {
            cumulative += h->buckets[b];
            if (b < LATENCY_BUCKETS)
                snprintf(labels, sizeof(labels), "method=\"%s\",le=\"%g\"", method, latency_bounds[b]);
            else
                snprintf(labels, sizeof(labels), "method=\"%s\",le=\"+Inf\"", method);
            emit(ctx, fam, "histogram", help, LATENCY_FAMILY "_bucket", labels, (double)cumulative);
        }
        snprintf(labels, sizeof(labels), "method=\"%s\"", method);
        emit(ctx, fam, "histogram", help, LATENCY_FAMILY "_sum", labels, (double)h->sum_ns / 1e9);
        emit(ctx, fam, "histogram", help, LATENCY_FAMILY "_count", labels, (double)cumulative);
    }
}

static void one(metrics_emit_fn *emit, void *ctx, const char *fam, const char *type, const char *help,
                const char *labels, double value)
{
    emit(ctx, fam, type, help, fam, labels, value);
}

static void routing(const struct snapshot *sn, metrics_emit_fn *emit, void *ctx)
{
    const struct shard_stats *st = &sn->shards;
    static const char lk[] = "impresence_route_lookups_total";
    static const char lkh[] = "QueryRoute/Deliver route lookups: hit = the user had a route.";
    one(emit, ctx, lk, "counter", lkh, "result=\"hit\"", (double)st->route_hits);
    one(emit, ctx, lk, "counter", lkh, "result=\"miss\"", (double)st->route_misses);
    static const char dl[] = "impresence_deliveries_total";
    static const char dlh[] = "Deliver publishes: delivered = a subscriber received it.";
    one(emit, ctx, dl, "counter", dlh, "result=\"delivered\"", (double)st->delivered);
    one(emit, ctx, dl, "counter", dlh, "result=\"no_subscriber\"", (double)st->undelivered);
    one(emit, ctx, "impresence_deliver_retries_total", "counter",
        "Deliver publish attempts after the first (Redis certainly had not executed it).", "",
        (double)st->deliver_retries);
}

/* Gateway drains (contract §8), by how they started: DrainGateway or a lapsed lease. */
static void gateway_drains(const struct snapshot *sn, metrics_emit_fn *emit, void *ctx)
{
    const struct shard_stats *st = &sn->shards;
    static const char dr[] = "impresence_gateway_drains_total";
    static const char drh[] = "Gateway drains finished: manual = DrainGateway, lease = a lapsed lease.";
    one(emit, ctx, dr, "counter", drh, "how=\"manual\"", (double)st->drains[0]);
    one(emit, ctx, dr, "counter", drh, "how=\"lease\"", (double)st->drains[1]);
    one(emit, ctx, "impresence_gateway_drained_sessions_total", "counter",
        "Sessions ended by gateway drains, as their UnbindRoute would.", "", (double)st->drained_sessions);
}

/* The near cache (contract §11, docs/near-cache.md); zero with [route] near_cache = 0. */
static void near_cache(const struct snapshot *sn, metrics_emit_fn *emit, void *ctx)
{
    const struct shard_stats *st = &sn->shards;
    one(emit, ctx, "impresence_near_cache_hits_total", "counter",
        "QueryRoute/Deliver route lookups answered from the near cache.", "", (double)st->nc_hits);
    one(emit, ctx, "impresence_near_cache_misses_total", "counter",
        "Near cache lookups read from Redis instead (absent, changed, expired, or not trusted then).", "",
        (double)st->nc_misses);
    one(emit, ctx, "impresence_near_cache_invalidations_total", "counter",
        "User keys Redis reported changed to the near cache (CLIENT TRACKING).", "", (double)st->nc_invalidations);
    one(emit, ctx, "impresence_near_cache_flushes_total", "counter",
        "Whole near cache drops: tracking lost or hung, FLUSHALL/FLUSHDB, a cluster map change.", "",
        (double)st->nc_flushes);
    one(emit, ctx, "impresence_near_cache_entries", "gauge", "Entries in the near cache, all shards.", "",
        (double)st->nc_entries);
    one(emit, ctx, "impresence_near_cache_tracked", "gauge",
        "Redis nodes whose tracking is confirmed, summed over shards (0: every lookup reads Redis).", "",
        (double)st->nc_tracked);
}

/* Redis Cluster routing (contract §10); zero off a cluster. */
static void redis_cluster(const struct shard_stats *st, const char *const labels[SHARD_LINKS], metrics_emit_fn *emit,
                          void *ctx)
{
    static const char *const moved[SHARD_LINKS] = {[SHARD_LINK_CACHE] = "role=\"cache\",kind=\"moved\"",
                                                   [SHARD_LINK_QUEUE] = "role=\"queue\",kind=\"moved\""};
    static const char *const ask[SHARD_LINKS] = {[SHARD_LINK_CACHE] = "role=\"cache\",kind=\"ask\"",
                                                 [SHARD_LINK_QUEUE] = "role=\"queue\",kind=\"ask\""};
    static const char rdh[] = "Redis Cluster redirects followed (MOVED: the slot moved; ASK: it is migrating).";
    for (int r = 0; r < SHARD_LINKS; r++) {
        one(emit, ctx, "impresence_redis_cluster_redirects_total", "counter", rdh, moved[r], (double)st->link[r].moved);
        one(emit, ctx, "impresence_redis_cluster_redirects_total", "counter", rdh, ask[r], (double)st->link[r].ask);
    }
    for (int r = 0; r < SHARD_LINKS; r++)
        one(emit, ctx, "impresence_redis_cluster_retries_total", "counter",
            "Commands sent again after TRYAGAIN, CLUSTERDOWN, LOADING or an unreachable master.", labels[r],
            (double)st->link[r].retries);
    for (int r = 0; r < SHARD_LINKS; r++)
        one(emit, ctx, "impresence_redis_cluster_map_refreshes_total", "counter",
            "Slot maps taken from CLUSTER SLOTS.", labels[r], (double)st->link[r].refreshes);
    for (int r = 0; r < SHARD_LINKS; r++)
        one(emit, ctx, "impresence_redis_cluster_masters", "gauge",
            "Masters in the shards' slot maps, summed over shards.", labels[r], (double)st->link[r].masters);
}

static void redis(const struct snapshot *sn, metrics_emit_fn *emit, void *ctx)
{
    static const char *const labels[SHARD_LINKS] = {[SHARD_LINK_CACHE] = "role=\"cache\"",
                                                    [SHARD_LINK_QUEUE] = "role=\"queue\""};
    const struct shard_stats *st = &sn->shards;
    const struct redis_gauges *g = sn->v->redis;
    /* A family's samples must be contiguous: family outside, role inside. */
    for (int r = 0; r < SHARD_LINKS; r++)
        one(emit, ctx, "impresence_redis_errors_total", "counter",
            "Redis timeouts, lost connections, failed connects and setup errors.", labels[r],
            (double)st->link[r].errors);
    for (int r = 0; r < SHARD_LINKS; r++)
        one(emit, ctx, "impresence_redis_reconnects_total", "counter",
            "Redis connections re-established after a failure.", labels[r], (double)st->link[r].reconnects);
    for (int r = 0; r < SHARD_LINKS; r++)
        one(emit, ctx, "impresence_redis_connections_up", "gauge",
            "Shard connections to Redis that are up (one per shard and role; on a cluster one per master).", labels[r],
            (double)st->link[r].up);
    redis_cluster(st, labels, emit, ctx);
    for (int r = 0; r < SHARD_LINKS; r++)
        one(emit, ctx, "impresence_redis_used_memory_bytes", "gauge",
            "used_memory from Redis INFO, polled every few seconds.", labels[r],
            (double)counter_get(&g->used_memory[r]));
    uint64_t keys = counter_get(&g->cache_keys);
    one(emit, ctx, "impresence_cache_keys", "gauge", "Keys in the cache database (DBSIZE, polled).", "",
        (double)keys);
    /* Each online user has a route, a status and a sessions key: exact when the cache database
     * holds only im-presence keys and they live alike (route_ttl == status_ttl); see README. */
    one(emit, ctx, "impresence_online_users", "gauge",
        "Online users, estimated as cache keys / 3 (O(1) at any scale).", "", (double)(keys / 3));
}

static void shards(const struct snapshot *sn, metrics_emit_fn *emit, void *ctx)
{
    const struct metrics_view *v = sn->v;
    char labels[32];
    for (int s = 0; s < v->nshards; s++) {
        snprintf(labels, sizeof(labels), "shard=\"%d\"", s);
        one(emit, ctx, "impresence_shard_inflight", "gauge",
            "Requests handed to the shard and not yet answered.", labels,
            (double)acceptor_shard_inflight(v->acc, s));
    }
    for (int s = 0; s < v->nshards; s++) {
        struct shard_stats st;
        shard_stats_read(&v->shards[s], &st);
        snprintf(labels, sizeof(labels), "shard=\"%d\"", s);
        one(emit, ctx, "impresence_shard_inbox_depth", "gauge",
            "Requests waiting in the shard's inbox ring.", labels, (double)st.inbox_depth);
    }
}

static void connections(const struct snapshot *sn, metrics_emit_fn *emit, void *ctx)
{
    const struct acceptor_stats *c = &sn->acc;
    one(emit, ctx, "impresence_connections_open", "gauge", "Client connections open.", "", (double)c->open);
    one(emit, ctx, "impresence_connections_accepted_total", "counter", "Client connections accepted.", "",
        (double)c->accepted);
    one(emit, ctx, "impresence_connections_rejected_total", "counter",
        "Connections closed at once: max_connections reached or shutting down.", "", (double)c->rejected);
    one(emit, ctx, "impresence_connections_idle_closed_total", "counter",
        "Connections closed after idle_timeout.", "", (double)c->idle_closed);
    one(emit, ctx, "impresence_connections_output_overflow_total", "counter",
        "Connections closed for unsent output over max_output_bytes.", "", (double)c->output_overflows);
    one(emit, ctx, "impresence_protocol_errors_total", "counter",
        "Connections closed for an unrecoverable framing error.", "", (double)c->protocol_errors);
    one(emit, ctx, "impresence_received_bytes_total", "counter", "Bytes read from clients.", "",
        (double)c->bytes_in);
    one(emit, ctx, "impresence_sent_bytes_total", "counter", "Bytes written to clients.", "",
        (double)c->bytes_out);
}

void metrics_collect(const struct metrics_view *v, metrics_emit_fn *emit, void *ctx)
{
    struct snapshot sn = {.v = v};
    acceptor_stats_read(v->acc, &sn.acc);
    shard_stats_sum(v->shards, v->nshards, &sn.shards);
    requests(&sn, emit, ctx);
    latency(&sn, emit, ctx);
    routing(&sn, emit, ctx);
    gateway_drains(&sn, emit, ctx);
    near_cache(&sn, emit, ctx);
    redis(&sn, emit, ctx);
    shards(&sn, emit, ctx);
    connections(&sn, emit, ctx);
    one(emit, ctx, "impresence_shards", "gauge", "Shard threads (thread_count).", "", (double)v->nshards);
    one(emit, ctx, "impresence_zookeeper_registered", "gauge",
        "1 while connected to ZooKeeper and holding every /PresenceService node ([zookeeper]), else 0.", "",
        (double)registrar_registered(v->registrar));
}

/* --- Prometheus text --- */

struct text {
    char *buf;
    size_t len, cap;
    const char *family; /* last family written, to print HELP/TYPE once */
    bool failed;
};

static void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_printf(struct text *t, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n;
        char *p = realloc(t->buf, cap);
        if (p == NULL) {
            t->failed = true;
            return;
        }
        t->buf = p;
        t->cap = cap;
    }
}

static void emit_text(void *ctx, const char *family, const char *type, const char *help, const char *name,
                      const char *labels, double value)
{
    struct text *t = ctx;
    if (t->family == NULL || strcmp(t->family, family) != 0) {
        text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", family, help, family, type);
        t->family = family;
    }
    text_printf(t, "%s%s%s%s %.17g\n", name, *labels ? "{" : "", labels, *labels ? "}" : "", value);
}

char *metrics_render(const struct metrics_view *v, size_t *len)
{
    struct text t = {.buf = malloc(16384), .cap = 16384};
    if (t.buf == NULL)
        return NULL;
    t.buf[0] = '\0';
    metrics_collect(v, emit_text, &t);
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    *len = t.len;
    return t.buf;
}

/* --- Stats RPC --- */

struct stats {
    Mpim__Stat *items;
    Mpim__Stat **ptrs;
    char *names;       /* one arena for every name */
    size_t n, cap, names_len, names_cap;
    bool failed;
};

static void emit_stat(void *ctx, const char *family, const char *type, const char *help, const char *name,
                      const char *labels, double value)
{
    (void)family;
    (void)type;
    (void)help;
    struct stats *st = ctx;
    if (st->failed || st->n == st->cap) {
        st->failed = true;
        return;
    }
    char buf[256];
    int len = snprintf(buf, sizeof(buf), "%s%s%s%s", name, *labels ? "{" : "", labels, *labels ? "}" : "");
    if (len < 0 || (size_t)len >= sizeof(buf) || st->names_len + (size_t)len + 1 > st->names_cap) {
        st->failed = true;
        return;
    }
    char *copy = st->names + st->names_len;
    memcpy(copy, buf, (size_t)len + 1);
    st->names_len += (size_t)len + 1;
    Mpim__Stat *item = &st->items[st->n];
    mpim__stat__init(item);
    item->name = copy;
    item->value = value;
    st->ptrs[st->n++] = item;
}

void metrics_pack_stats(const void *view, struct pr_request *req)
{
    const struct metrics_view *v = view;
    struct stats st = {.cap = 1024, .names_cap = 1024 * 128};
    st.items = calloc(st.cap, sizeof(*st.items));
    st.ptrs = calloc(st.cap, sizeof(*st.ptrs));
    st.names = malloc(st.names_cap);
    if (st.items == NULL || st.ptrs == NULL || st.names == NULL) {
        request_set_result(req, MPIM__CODE__INTERNAL, "out of memory");
        goto done;
    }
    metrics_collect(v, emit_stat, &st);
    if (st.failed) {
        request_set_result(req, MPIM__CODE__INTERNAL, "too many stats");
        goto done;
    }
    Mpim__Result result = MPIM__RESULT__INIT;
    Mpim__StatsResp resp = MPIM__STATS_RESP__INIT;
    resp.result = &result;
    resp.n_stats = st.n;
    resp.stats = st.ptrs;
    req->packed_len = mpim__stats_resp__get_packed_size(&resp);
    req->packed = malloc(req->packed_len ? req->packed_len : 1);
    if (req->packed == NULL) {
        request_set_result(req, MPIM__CODE__INTERNAL, "out of memory");
        goto done;
    }
    mpim__stats_resp__pack(&resp, req->packed);
    request_set_result(req, MPIM__CODE__OK, NULL);
done:
    free(st.items);
    free(st.ptrs);
    free(st.names);
}

/* --- health --- */

int metrics_health(const struct metrics_view *v, char *why, size_t len)
{
    for (int s = 0; s < v->nshards; s++) {
        struct shard_stats st;
        shard_stats_read(&v->shards[s], &st);
        bool cache = st.link[SHARD_LINK_CACHE].all_up != 0;
        bool queue = st.link[SHARD_LINK_QUEUE].all_up != 0;
        if (!cache || !queue) {
            snprintf(why, len, "shard %d: %s redis down", s, !cache ? "cache" : "queue");
            return -1;
        }
    }
    snprintf(why, len, "ok");
    return 0;
}

int metrics_ready(const struct metrics_view *v, char *why, size_t len)
{
    struct acceptor_stats acc;
    acceptor_stats_read(v->acc, &acc);
    if (acc.draining) {
        snprintf(why, len, "shutting down");
        return -1;
    }
    for (int s = 0; s < v->nshards; s++) {
        struct shard_stats st;
        shard_stats_read(&v->shards[s], &st);
        if (st.link[SHARD_LINK_CACHE].all_up == 0) {
            snprintf(why, len, "shard %d: cache redis down", s);
            return -1;
        }
    }
    snprintf(why, len, "ok");
    return 0;
}
