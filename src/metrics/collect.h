/* Every metric im-presence exposes, enumerated in one place for both GET /metrics and the Stats
 * RPC. Any thread: it reads the acceptor and the shards only through their stats readers
 * (acceptor_stats_read, shard_stats_read), never their struct layouts. */
#ifndef PR_METRICS_COLLECT_H
#define PR_METRICS_COLLECT_H

#include <stddef.h>

#include "core/config.h"
#include "core/counter.h"

struct acceptor;
struct shard;
struct pr_request;
struct registrar;

/* Polled from Redis INFO by the metrics thread (its only writer), never on the hot path. */
struct redis_gauges {
    counter_t used_memory[2]; /* bytes, [0] cache, [1] queue; 0 until polled */
    counter_t cache_keys;     /* keys in the cache database */
    counter_t polled;         /* successful polls */
};

struct metrics_view {
    const struct presence_conf *conf;
    const struct acceptor *acc;
    const struct shard *shards;
    int nshards;
    const struct redis_gauges *redis;
    const struct registrar *registrar; /* read through registrar_registered; NULL: none */
};

/* One sample. `family` groups samples under one HELP/TYPE; `name` is the sample's own name
 * (family, or family_bucket/_sum/_count for histograms); `labels` is "" or `k="v",...`. */
typedef void metrics_emit_fn(void *ctx, const char *family, const char *type, const char *help,
                             const char *name, const char *labels, double value);

void metrics_collect(const struct metrics_view *v, metrics_emit_fn *emit, void *ctx);

/* Prometheus text exposition format 0.0.4. Returns a malloc'd string (NULL: out of memory). */
char *metrics_render(const struct metrics_view *v, size_t *len);

/* Acceptor thread: answer a Stats request with every sample (req->packed). `view` is a
 * const struct metrics_view *: the function is the acceptor's acceptor_stats_fn. */
void metrics_pack_stats(const void *view, struct pr_request *req);

/* Health: 0 when every shard has live cache and queue connections; else -1 and why. */
int metrics_health(const struct metrics_view *v, char *why, size_t len);
/* Ready: healthy enough to take traffic (not shutting down, every cache link up). */
int metrics_ready(const struct metrics_view *v, char *why, size_t len);

#endif
