/* The INI configuration (contract §4). Loaded once by the main thread before any other thread
 * starts; read-only afterwards, so every thread may read it. */
#ifndef PR_CORE_CONFIG_H
#define PR_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "core/node_list.h"

/* How a section finds its Redis (contract §10). */
enum redis_mode {
    REDIS_STANDALONE, /* host:port */
    REDIS_CLUSTER,    /* a Redis Cluster found through the seed nodes in nodes */
    REDIS_SENTINEL,   /* the master named master_name, as the sentinels in nodes report it */
};

/* How Deliver publishes on the queue (contract §10, [redis_queue] pubsub). */
enum redis_pubsub {
    PUBSUB_GLOBAL,  /* PUBLISH */
    PUBSUB_SHARDED, /* SPUBLISH to the channel's slot master (Redis >= 7) */
};

/* Which sessions of a user a Bind ends (contract §6, [route] login_policy). */
enum login_policy {
    LOGIN_MULTI,        /* none: every device stays online */
    LOGIN_SINGLE,       /* every other session */
    LOGIN_PER_PLATFORM, /* the other sessions on the same non-zero platform */
};

/* What clients speak (contract §9, [presence_service] dialect). */
enum dialect {
    DIALECT_SEED, /* the design's messages (§2) */
    DIALECT_MPIM, /* MPIM as it ships: DeliverReq field 3 is the payload; Deliver publishes on the
                   * gateway's channel 10000 + std::hash(gateway) % 50000 */
};

struct redis_conf {
    int mode;            /* enum redis_mode */
    char host[256];      /* Redis server address (standalone) */
    int port;            /* its TCP port */
    char nodes[181];     /* sentinel: the sentinels; cluster: seed nodes; "host:port,..." (as written) */
    struct cluster_addr node[NODE_LIST_MAX]; /* ... parsed when the file is loaded */
    int nnodes;
    char master_name[128]; /* sentinel: the monitored master's name */
    int database;        /* SELECTed on connect; always 0 on a cluster */
    bool database_given; /* the file set database (a cluster refuses any but 0) */
    int pubsub;          /* queue: enum redis_pubsub */
    int timeout_ms;      /* per-request deadline and connect timeout */
    int wait_replicas;   /* cache: replicas that must confirm each write (WAIT); 0: none */
    char username[128];  /* ACL user for AUTH; empty: password-only AUTH */
    char password[256];  /* AUTH password; empty: no AUTH */
};

/* [zookeeper] (contract §9): registration for MPIM's RPC clients, off while hosts is empty. */
struct zookeeper_conf {
    char hosts[181];        /* the ZooKeeper servers, "host:port,..." (the C client's connect string) */
    int session_timeout_ms; /* asked of ZooKeeper, which may negotiate another */
    char advertise[181];    /* "ip:port" written into the nodes; empty: [presence_service] host:port */
};

struct presence_conf {
    /* [presence_service] */
    char host[256];              /* listen address */
    int port;                    /* listen port */
    int shards;                  /* thread_count: shard threads */
    int max_connections;         /* open client connections; more are accepted and closed */
    size_t max_frame_bytes;      /* H + args_size limit of one request */
    size_t max_message_bytes;    /* Deliver payload limit */
    int max_batch;               /* ids one batch call may list; more: INVALID for the call */
    int max_inflight;            /* pipelined requests per connection awaiting their answer */
    int queue_depth;             /* requests a shard may hold; more get OVERLOADED */
    size_t max_output_bytes;     /* unsent response bytes per connection before it is closed */
    int idle_timeout;            /* seconds without a request before a quiet connection is closed; 0 = never */
    int batch_sched_above;       /* shards use SCHED_BATCH from this many requests per wake-up; 0 = always */
    int dialect;                 /* enum dialect */
    int log_level;               /* enum log_level */
    char log_file[256];          /* append logs here instead of stderr; reopened on SIGHUP */
    /* [metrics] */
    char metrics_host[256];      /* HTTP /metrics, /healthz, /readyz listen address */
    int metrics_port;            /* 0 disables the listener */
    /* [route] */
    int route_ttl;               /* seconds: a session's life without Bind or Heartbeat */
    int login_policy;            /* enum login_policy */
    int status_ttl;              /* seconds */
    int max_retries;             /* Deliver publish retries */
    int retry_interval_ms;       /* between those retries */
    int near_cache;              /* near cache entries per shard (contract §11); 0: off */
    /* [redis_cache], [redis_queue] */
    struct redis_conf cache;
    struct redis_conf queue;
    /* [zookeeper] */
    struct zookeeper_conf zookeeper;
};

void config_defaults(struct presence_conf *c);
/* The config file's word for an enum value (for logs). */
const char *config_redis_mode_name(int mode);
const char *config_pubsub_name(int pubsub);
const char *config_dialect_name(int dialect);
const char *config_login_policy_name(int policy);

/* Load path over the defaults already in c. Unknown keys are reported on `report` (file, line,
 * key) and skipped. Returns 0, or -1 after writing "file:line: [section] key: why" to err. */
int config_load(struct presence_conf *c, const char *path, FILE *report, char *err, size_t errlen);

/* Set one key as the file would ("presence_service", "port", "6001"). 0 or -1 with err. */
int config_set(struct presence_conf *c, const char *section, const char *key, const char *value,
               char *err, size_t errlen);

/* Write the effective configuration as an INI file. */
void config_print(const struct presence_conf *c, FILE *out);

/* The "ip:port" the ZooKeeper nodes hold: [zookeeper] advertise, or else the listen address
 * host:port (config_load refuses a wildcard host there). */
void config_zookeeper_advertise(const struct presence_conf *c, char *out, size_t len);

#endif
