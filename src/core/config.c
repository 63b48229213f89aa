#include "core/config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

/* inih reads a line into a 200-byte buffer; a value must leave room for its key. */
#define CONFIG_VALUE_MAX 180

enum key_type { KEY_INT, KEY_SIZE, KEY_STRING, KEY_LOG_LEVEL, KEY_ENUM };

struct key_spec {
    const char *section;
    const char *key;
    enum key_type type;
    size_t offset;     /* into struct presence_conf */
    size_t size;       /* KEY_STRING: buffer size */
    long long min, max; /* KEY_INT / KEY_SIZE bounds, inclusive */
    const char *const *names; /* KEY_ENUM: the word of each value, by value */
    int nnames;
};

/* The words of the enum keys, indexed by their value. */
static const char *const redis_modes[] = {[REDIS_STANDALONE] = "standalone", [REDIS_CLUSTER] = "cluster",
                                          [REDIS_SENTINEL] = "sentinel"};
static const char *const pubsub_kinds[] = {[PUBSUB_GLOBAL] = "global", [PUBSUB_SHARDED] = "sharded"};
static const char *const dialects[] = {[DIALECT_SEED] = "seed", [DIALECT_MPIM] = "mpim"};
static const char *const login_policies[] = {[LOGIN_MULTI] = "multi", [LOGIN_SINGLE] = "single",
                                             [LOGIN_PER_PLATFORM] = "per_platform"};

#define OFF(field) offsetof(struct presence_conf, field)
#define INT(sec, name, field, lo, hi) {sec, name, KEY_INT, OFF(field), 0, lo, hi, NULL, 0}
#define SIZE(sec, name, field, lo, hi) {sec, name, KEY_SIZE, OFF(field), 0, lo, hi, NULL, 0}
#define STR(sec, name, field)                                                                      \
    {sec, name, KEY_STRING, OFF(field), sizeof(((struct presence_conf *)0)->field), 0, 0, NULL, 0}
#define ENUM(sec, name, field, words)                                                              \
    {sec, name, KEY_ENUM, OFF(field), 0, 0, 0, words, (int)(sizeof(words) / sizeof(words[0]))}
#define REDIS_KEYS(sec, r)                                                                         \
    ENUM(sec, "mode", r.mode, redis_modes), STR(sec, "nodes", r.nodes),                         \
        STR(sec, "master_name", r.master_name),                                                    \
        STR(sec, "host", r.host), INT(sec, "port", r.port, 1, 65535),                             \
        INT(sec, "database", r.database, 0, 1000000), INT(sec, "timeout", r.timeout_ms, 1, 3600000), \
        STR(sec, "username", r.username), STR(sec, "password", r.password)

static const struct key_spec keys[] = {
    STR("presence_service", "host", host),
    INT("presence_service", "port", port, 1, 65535),
    INT("presence_service", "thread_count", shards, 1, 256),
    INT("presence_service", "max_connections", max_connections, 1, 1000000),
    SIZE("presence_service", "max_frame_bytes", max_frame_bytes, 64, 256LL << 20),
    SIZE("presence_service", "max_message_bytes", max_message_bytes, 0, 256LL << 20),
    INT("presence_service", "max_batch", max_batch, 1, 100000),
    INT("presence_service", "max_inflight", max_inflight, 1, 1 << 20),
    INT("presence_service", "queue_depth", queue_depth, 1, 1 << 24),
    SIZE("presence_service", "max_output_bytes", max_output_bytes, 1024, 1LL << 32),
    INT("presence_service", "idle_timeout", idle_timeout, 0, 86400 * 365),
    INT("presence_service", "batch_sched_above", batch_sched_above, 0, 1 << 20),
    ENUM("presence_service", "dialect", dialect, dialects),
    {"presence_service", "log_level", KEY_LOG_LEVEL, OFF(log_level), 0, 0, 0, NULL, 0},
    STR("presence_service", "log_file", log_file),
    STR("metrics", "host", metrics_host),
    INT("metrics", "port", metrics_port, 0, 65535),
    INT("route", "route_ttl", route_ttl, 1, INT_MAX),
    ENUM("route", "login_policy", login_policy, login_policies),
    INT("route", "status_ttl", status_ttl, 1, INT_MAX),
    INT("route", "max_retries", max_retries, 0, 100),
    INT("route", "retry_interval", retry_interval_ms, 0, 600000),
    INT("route", "near_cache", near_cache, 0, 10000000),
    REDIS_KEYS("redis_cache", cache),
    INT("redis_cache", "wait_replicas", cache.wait_replicas, 0, 100),
    REDIS_KEYS("redis_queue", queue),
    ENUM("redis_queue", "pubsub", queue.pubsub, pubsub_kinds),
    STR("zookeeper", "hosts", zookeeper.hosts),
    INT("zookeeper", "session_timeout", zookeeper.session_timeout_ms, 100, 600000),
    STR("zookeeper", "advertise", zookeeper.advertise),
};

void config_defaults(struct presence_conf *c)
{
    memset(c, 0, sizeof(*c));
    strcpy(c->host, "127.0.0.1");
    c->port = 6000;
    c->shards = 4;
    c->max_connections = 1000;
    c->max_frame_bytes = 1u << 20;
    c->max_message_bytes = 256u << 10;
    c->max_batch = 1000;
    c->max_inflight = 1024;
    c->queue_depth = 65536;
    c->batch_sched_above = 16;
    c->max_output_bytes = 64u << 20;
    c->log_level = LOG_INFO;
    strcpy(c->metrics_host, "127.0.0.1");
    c->metrics_port = 9121;
    c->route_ttl = 3600;
    c->status_ttl = 3600;
    c->max_retries = 3;
    c->retry_interval_ms = 1000;
    c->near_cache = 100000;
    struct redis_conf *r[2] = {&c->cache, &c->queue};
    for (int i = 0; i < 2; i++) {
        strcpy(r[i]->host, "127.0.0.1");
        r[i]->port = 6379;
        r[i]->database = i; /* cache 0, queue 1 */
        r[i]->timeout_ms = 5000;
    }
    c->zookeeper.session_timeout_ms = 10000;
}

/* Integers, with an optional k/m/g suffix (x1024) for sizes. */
static int parse_number(const char *value, bool size_suffix, long long *out)
{
    errno = 0;
    char *end;
    long long v = strtoll(value, &end, 10);
    if (end == value || errno != 0)
        return -1;
    if (size_suffix && *end != '\0' && end[1] == '\0') {
        int shift = *end == 'k' || *end == 'K' ? 10 : *end == 'm' || *end == 'M' ? 20
                  : *end == 'g' || *end == 'G' ? 30 : -1;
        if (shift < 0 || v > (LLONG_MAX >> shift) || v < 0)
            return -1;
        v <<= shift;
        end++;
    }
    if (*end != '\0')
        return -1;
    *out = v;
    return 0;
}

const char *config_redis_mode_name(int mode)
{
    return redis_modes[mode];
}

const char *config_pubsub_name(int pubsub)
{
    return pubsub_kinds[pubsub];
}

const char *config_dialect_name(int dialect)
{
    return dialects[dialect];
}

const char *config_login_policy_name(int policy)
{
    return login_policies[policy];
}

/* value's index in names[n], or -1. */
static int find_name(const char *const *names, int n, const char *value)
{
    for (int i = 0; i < n; i++)
        if (strcmp(value, names[i]) == 0)
            return i;
    return -1;
}

static const struct key_spec *find_key(const char *section, const char *key)
{
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].key, key) == 0)
            return &keys[i];
    return NULL;
}

/* 1 set, 0 unknown key, -1 invalid value (why in err). */
static int apply(struct presence_conf *c, const char *section, const char *key, const char *value,
                 char *err, size_t errlen)
{
    const struct key_spec *k = find_key(section, key);
    if (k == NULL)
        return 0;
    char *field = (char *)c + k->offset;
    long long v;
    if (strcmp(key, "database") == 0) /* told apart from the default: see redis_conf_check */
        (strcmp(section, "redis_cache") == 0 ? &c->cache : &c->queue)->database_given = true;
    switch (k->type) {
    case KEY_STRING:
        /* Bounded so that every setting fits on one line inih can read (CONFIG_LINE_MAX). */
        if (strlen(value) >= k->size || strlen(value) > CONFIG_VALUE_MAX) {
            snprintf(err, errlen, "value longer than %d bytes", CONFIG_VALUE_MAX);
            return -1;
        }
        strcpy(field, value);
        return 1;
    case KEY_LOG_LEVEL: {
        int level = log_parse_level(value);
        if (level < 0) {
            snprintf(err, errlen, "'%s' is not one of error, warn, info, debug", value);
            return -1;
        }
        *(int *)field = level;
        return 1;
    }
    case KEY_ENUM: {
        if ((v = find_name(k->names, k->nnames, value)) >= 0) {
            *(int *)field = (int)v;
            return 1;
        }
        int n = snprintf(err, errlen, "'%s' is not one of", value);
        for (int i = 0; i < k->nnames && n >= 0 && (size_t)n < errlen; i++)
            n += snprintf(err + n, errlen - (size_t)n, "%s %s", i ? "," : "", k->names[i]);
        return -1;
    }
    case KEY_INT:
    case KEY_SIZE:
        if (parse_number(value, k->type == KEY_SIZE, &v) < 0 || v < k->min || v > k->max) {
            snprintf(err, errlen, "'%s' is not a whole number from %lld to %lld%s", value, k->min,
                     k->max, k->type == KEY_SIZE ? " (k/m/g suffixes allowed)" : "");
            return -1;
        }
        if (k->type == KEY_INT)
            *(int *)field = (int)v;
        else
            *(size_t *)field = (size_t)v;
        return 1;
    }
    return 0;
}

int config_set(struct presence_conf *c, const char *section, const char *key, const char *value,
               char *err, size_t errlen)
{
    char why[256];
    int rc = apply(c, section, key, value, why, sizeof(why));
    if (rc == 1)
        return 0;
    if (rc == 0)
        snprintf(err, errlen, "[%s] %s: unknown key", section, key);
    else
        snprintf(err, errlen, "[%s] %s: %s", section, key, why);
    return -1;
}

static int redis_conf_check(struct redis_conf *r, char *why, size_t len);
static int zookeeper_conf_check(const struct presence_conf *c, char *why, size_t len);

/* inih hands us lines through this reader so that we know each key's line number. */
struct load_ctx {
    struct presence_conf *conf;
    const char *path;
    FILE *file;
    FILE *report;
    int line;       /* line of the text inih is handling now */
    int next_line;  /* line the next read starts */
    char *err;
    size_t errlen;
    bool failed;
};

static char *reader(char *str, int num, void *stream)
{
    struct load_ctx *ctx = stream;
    char *s = fgets(str, num, ctx->file);
    if (s != NULL) {
        ctx->line = ctx->next_line;
        size_t n = strlen(s);
        if (n > 0 && s[n - 1] == '\n') {
            ctx->next_line++;
        } else if (!feof(ctx->file)) {
            /* inih reads lines of at most `num` bytes and would parse the rest as a new line. */
            if (!ctx->failed)
                snprintf(ctx->err, ctx->errlen, "%s:%d: line longer than %d bytes", ctx->path, ctx->line,
                         num - 2);
            ctx->failed = true;
            return NULL;
        }
    }
    return s;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    struct load_ctx *ctx = user;
    if (name == NULL || value == NULL)
        return 1; /* a bare section header */
    char why[256];
    int rc = apply(ctx->conf, section, name, value, why, sizeof(why));
    if (rc == 0 && ctx->report != NULL)
        fprintf(ctx->report, "%s:%d: [%s] %s: unknown key, ignored\n", ctx->path, ctx->line, section,
                name);
    if (rc < 0 && !ctx->failed) {
        ctx->failed = true;
        snprintf(ctx->err, ctx->errlen, "%s:%d: [%s] %s: %s", ctx->path, ctx->line, section, name, why);
    }
    return 1;
}

int config_load(struct presence_conf *c, const char *path, FILE *report, char *err, size_t errlen)
{
    struct load_ctx ctx = {.conf = c, .path = path, .report = report, .line = 1, .next_line = 1,
                           .err = err, .errlen = errlen};
    ctx.file = fopen(path, "r");
    if (ctx.file == NULL) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = ini_parse_stream(reader, &ctx, handler, &ctx);
    fclose(ctx.file);
    if (ctx.failed)
        return -1;
    if (rc != 0) {
        snprintf(err, errlen, "%s:%d: syntax error", path, rc);
        return -1;
    }
    char why[256];
    for (int i = 0; i < 2; i++) {
        const char *section = i ? "redis_queue" : "redis_cache";
        if (redis_conf_check(i ? &c->queue : &c->cache, why, sizeof(why)) < 0) {
            snprintf(err, errlen, "%s: [%s] %s", path, section, why);
            return -1;
        }
    }
    if (zookeeper_conf_check(c, why, sizeof(why)) < 0) {
        snprintf(err, errlen, "%s: [zookeeper] %s", path, why);
        return -1;
    }
    return 0;
}

static bool wildcard_host(const char *host)
{
    return host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ||
           strcmp(host, "[::]") == 0 || strcmp(host, "*") == 0;
}

/* §9: hosts must be a server list; advertise, when given or needed, an address clients can dial. */
static int zookeeper_conf_check(const struct presence_conf *c, char *why, size_t len)
{
    const struct zookeeper_conf *z = &c->zookeeper;
    struct cluster_addr addr[NODE_LIST_MAX];
    int n;
    char err[150];
    if (z->hosts[0] != '\0' && node_list_parse(z->hosts, addr, NODE_LIST_MAX, &n, err, sizeof(err)) < 0) {
        snprintf(why, len, "hosts: %s (want the ZooKeeper servers as host:port,...)", err);
        return -1;
    }
    if (z->advertise[0] != '\0') {
        if (node_list_parse(z->advertise, addr, 1, &n, err, sizeof(err)) < 0 || wildcard_host(addr[0].host)) {
            snprintf(why, len, "advertise: '%.*s' is not an ip:port clients can dial", 100, z->advertise);
            return -1;
        }
    } else if (z->hosts[0] != '\0' && wildcard_host(c->host)) {
        snprintf(why, len, "advertise: required when [presence_service] host is %.*s (the nodes must hold "
                 "an address clients can dial)", 60, c->host[0] ? c->host : "empty");
        return -1;
    }
    return 0;
}

void config_zookeeper_advertise(const struct presence_conf *c, char *out, size_t len)
{
    if (c->zookeeper.advertise[0] != '\0')
        snprintf(out, len, "%s", c->zookeeper.advertise);
    else
        snprintf(out, len, "%s:%d", c->host, c->port);
}

/* What one key cannot say alone: a sentinel section needs its sentinels and the master's name,
 * a cluster section its seed nodes and database 0 (a cluster has no other). */
static int redis_conf_check(struct redis_conf *r, char *why, size_t len)
{
    r->nnodes = 0;
    if (r->mode == REDIS_STANDALONE)
        return 0;
    if (r->mode == REDIS_CLUSTER) {
        if (r->database_given && r->database != 0) {
            snprintf(why, len, "database: %d, but a Redis Cluster has only database 0", r->database);
            return -1;
        }
        r->database = 0;
        char err[150];
        if (node_list_parse(r->nodes, r->node, NODE_LIST_MAX, &r->nnodes, err, sizeof(err)) < 0) {
            snprintf(why, len, "nodes: %s (mode = cluster needs seed nodes as host:port,...)", err);
            return -1;
        }
        return 0;
    }
    if (r->master_name[0] == '\0') {
        snprintf(why, len, "master_name: required with mode = sentinel");
        return -1;
    }
    char err[150]; /* room for it in why (256) beside the hint */
    if (node_list_parse(r->nodes, r->node, NODE_LIST_MAX, &r->nnodes, err, sizeof(err)) < 0) {
        snprintf(why, len, "nodes: %s (mode = sentinel needs the sentinels as host:port,...)", err);
        return -1;
    }
    return 0;
}

void config_print(const struct presence_conf *c, FILE *out)
{
    const char *section = "";
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const struct key_spec *k = &keys[i];
        if (strcmp(section, k->section) != 0) {
            fprintf(out, "%s[%s]\n", i ? "\n" : "", k->section);
            section = k->section;
        }
        const char *field = (const char *)c + k->offset;
        switch (k->type) {
        case KEY_STRING:
            fprintf(out, "%s = %s\n", k->key,
                    strcmp(k->key, "password") == 0 && *field ? "(set)" : field);
            break;
        case KEY_INT:
            fprintf(out, "%s = %d\n", k->key, *(const int *)field);
            break;
        case KEY_SIZE:
            fprintf(out, "%s = %zu\n", k->key, *(const size_t *)field);
            break;
        case KEY_LOG_LEVEL:
            fprintf(out, "%s = %s\n", k->key, log_level_name(*(const int *)field));
            break;
        case KEY_ENUM:
            fprintf(out, "%s = %s\n", k->key, k->names[*(const int *)field]);
            break;
        }
    }
}
