/* im-presence: start-up and shutdown. The main thread becomes the acceptor thread.
 *
 *   im-presence -c FILE [--port N] [--shards N] [--log-level LEVEL] [--check-config]
 *
 * Exit codes: 0 clean shutdown, 1 cannot start (listen, threads), 2 bad configuration.
 *
 * Start-up order: bind the port, start the shards and the metrics thread, then listen. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "core/config.h"
#include "core/log.h"
#include "metrics/http.h"
#include "net/acceptor.h"
#include "registrar/registrar.h"
#include "shards/shard.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: im-presence -c FILE [--port N] [--shards N] [--log-level error|warn|info|debug]\n"
                 "                   [--check-config]\n"
                 "  -c, --config FILE   INI configuration (see conf/presence.ini)\n"
                 "  --port N            [presence_service] port\n"
                 "  --shards N          [presence_service] thread_count: shard threads\n"
                 "  --log-level LEVEL   [presence_service] log_level\n"
                 "  --check-config      validate, print the effective configuration, exit 0 or 2\n");
}

/* Parse the command line and load the configuration; exits 2 on any error. */
static void load_config(int argc, char **argv, struct presence_conf *conf, bool *check_only)
{
    enum { OPT_PORT = 256, OPT_SHARDS, OPT_LOG_LEVEL, OPT_CHECK };
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},   {"port", required_argument, NULL, OPT_PORT},
        {"shards", required_argument, NULL, OPT_SHARDS}, {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"check-config", no_argument, NULL, OPT_CHECK}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *path = NULL;
    /* Flags override the file whatever their order, so remember them and apply last. */
    const char *overrides[3][2] = {{"port", NULL}, {"thread_count", NULL}, {"log_level", NULL}};
    int opt;
    while ((opt = getopt_long(argc, argv, "c:h", options, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case OPT_PORT: overrides[0][1] = optarg; break;
        case OPT_SHARDS: overrides[1][1] = optarg; break;
        case OPT_LOG_LEVEL: overrides[2][1] = optarg; break;
        case OPT_CHECK: *check_only = true; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc) {
        fprintf(stderr, "im-presence: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        exit(2);
    }
    char err[512];
    config_defaults(conf);
    if (path != NULL && config_load(conf, path, stderr, err, sizeof(err)) < 0) {
        fprintf(stderr, "im-presence: %s\n", err);
        exit(2);
    }
    for (int i = 0; i < 3; i++) {
        if (overrides[i][1] != NULL &&
            config_set(conf, "presence_service", overrides[i][0], overrides[i][1], err, sizeof(err)) < 0) {
            fprintf(stderr, "im-presence: command line: %s\n", err);
            exit(2);
        }
    }
}

/* The effective configuration, once, one line per section. */
static void log_effective_config(const struct presence_conf *c)
{
    log_info("config: [presence_service] host=%s port=%d thread_count=%d max_connections=%d "
             "max_frame_bytes=%zu max_message_bytes=%zu max_inflight=%d queue_depth=%d "
             "max_output_bytes=%zu idle_timeout=%d batch_sched_above=%d dialect=%s log_level=%s log_file=%s",
             c->host, c->port, c->shards, c->max_connections, c->max_frame_bytes, c->max_message_bytes,
             c->max_inflight, c->queue_depth, c->max_output_bytes, c->idle_timeout, c->batch_sched_above,
             config_dialect_name(c->dialect), log_level_name(c->log_level), c->log_file[0] ? c->log_file : "(stderr)");
    log_info("config: [metrics] host=%s port=%d", c->metrics_host, c->metrics_port);
    log_info("config: [route] route_ttl=%d login_policy=%s status_ttl=%d max_retries=%d retry_interval=%d "
             "near_cache=%d",
             c->route_ttl, config_login_policy_name(c->login_policy), c->status_ttl, c->max_retries,
             c->retry_interval_ms, c->near_cache);
    char advertise[192];
    config_zookeeper_advertise(c, advertise, sizeof(advertise));
    log_info("config: [zookeeper] hosts=%s session_timeout=%d advertise=%s",
             c->zookeeper.hosts[0] ? c->zookeeper.hosts : "(off)", c->zookeeper.session_timeout_ms,
             advertise);
    const struct redis_conf *r[2] = {&c->cache, &c->queue};
    for (int i = 0; i < 2; i++)
        log_info("config: [redis_%s] mode=%s host=%s port=%d nodes=%s master_name=%s database=%d timeout=%d "
                 "wait_replicas=%d pubsub=%s username=%s password=%s",
                 i ? "queue" : "cache", config_redis_mode_name(r[i]->mode), r[i]->host,
                 r[i]->port, r[i]->nodes[0] ? r[i]->nodes : "(none)",
                 r[i]->master_name[0] ? r[i]->master_name : "(none)", r[i]->database, r[i]->timeout_ms,
                 r[i]->wait_replicas, config_pubsub_name(r[i]->pubsub), r[i]->username[0] ? r[i]->username : "(none)",
                 r[i]->password[0] ? "(set)" : "(none)");
}

int main(int argc, char **argv)
{
    /* SIGHUP's and SIGTERM's default action ends the process: one that arrives while starting
     * (a log rotation, a quick stop) is held until the acceptor's handlers exist, not fatal. */
    sigset_t held;
    sigemptyset(&held);
    sigaddset(&held, SIGHUP);
    sigaddset(&held, SIGTERM);
    sigaddset(&held, SIGINT);
    sigprocmask(SIG_BLOCK, &held, NULL);

    static struct presence_conf conf;
    bool check_only = false;
    load_config(argc, argv, &conf, &check_only);
    if (check_only) {
        config_print(&conf, stdout);
        return 0;
    }
    log_set_level(conf.log_level);
    log_set_thread("main");
    if (conf.log_file[0] != '\0' && log_open(conf.log_file) < 0) {
        fprintf(stderr, "im-presence: cannot open log_file %s\n", conf.log_file);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    log_effective_config(&conf);

    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    struct shard *shards = calloc((size_t)conf.shards, sizeof(*shards));
    static struct acceptor acc;
    if (loop == NULL || shards == NULL) {
        log_error("start-up failed reason=out_of_memory");
        return 1;
    }
    if (acceptor_init(&acc, &conf, loop, shards, conf.shards) < 0) {
        acceptor_destroy(&acc);
        return 1;
    }
    for (int i = 0; i < conf.shards; i++) {
        if (shard_init(&shards[i], i, &conf, loop, &acc.answered[i]) < 0) {
            log_error("start-up failed reason=out_of_memory shard=%d", i);
            return 1;
        }
    }
    static struct metrics_server metrics;
    metrics.view = (struct metrics_view){&conf, &acc, shards, conf.shards, &metrics.gauges, NULL};
    acc.stats = metrics_pack_stats; /* Stats answers with what /metrics shows */
    acc.stats_source = &metrics.view;
    /* Metrics are for operators: without their port the service itself still runs. */
    if (metrics_server_open(&metrics, &conf) < 0)
        log_error("metrics disabled: cannot listen addr=%s:%d", conf.metrics_host,
                  conf.metrics_port);
    for (int i = 0; i < conf.shards; i++) {
        if (shard_start(&shards[i]) < 0) {
            log_error("start-up failed reason=thread shard=%d", i);
            return 1;
        }
    }
    /* ZooKeeper registration (§9) waits for the port and the shards by itself; on SIGTERM it
     * deregisters before the acceptor drains. */
    static struct registrar registrar;
    if (registrar_start(&registrar, &conf, shards, conf.shards, acc.listener.fd) < 0)
        return 1;
    metrics.view.registrar = &registrar;
    acc.before_drain = registrar_deregister;
    acc.before_drain_arg = &registrar;
    if (metrics_server_start(&metrics) < 0) {
        log_error("start-up failed reason=thread thread=metrics");
        return 1;
    }
    /* Accepting comes last: a client that can connect finds every thread and signal handler in
     * place (the tests and load balancers take a connectable port as "started"). */
    sigprocmask(SIG_UNBLOCK, &held, NULL); /* the handlers run from here on */
    int rc = acceptor_run(&acc) < 0 ? 1 : 0;

    log_set_thread("main");
    registrar_stop(&registrar);
    metrics_server_stop(&metrics);
    for (int i = 0; i < conf.shards; i++)
        shard_stop(&shards[i]);
    uint64_t served = 0;
    for (int i = 0; i < conf.shards; i++)
        for (int m = 0; m < PR_METHOD_COUNT; m++)
            for (int code = 0; code < PR_CODE_COUNT; code++)
                served += counter_get(&shards[i].counters.requests[m][code]);
    acceptor_destroy(&acc);
    for (int i = 0; i < conf.shards; i++)
        shard_destroy(&shards[i]);
    free(shards);
    ev_loop_destroy(loop);
    log_info("stopped served=%llu accepted=%llu rejected=%llu",
             (unsigned long long)served, (unsigned long long)counter_get(&acc.counters.accepted),
             (unsigned long long)counter_get(&acc.counters.rejected));
    return rc;
}
