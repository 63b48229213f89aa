/* im-presence: start-up and shutdown. The main thread becomes the acceptor thread.
 *
 *   im-presence -c FILE [--port N] [--shards N] [--log-level LEVEL] [--check-config]
 *
 * Exit codes: 0 clean shutdown, 1 cannot start (listen, threads), 2 bad configuration. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>

#include "core/config.h"
#include "core/log.h"
#include "net/acceptor.h"
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

int main(int argc, char **argv)
{
    static struct presence_conf conf;
    bool check_only = false;
    load_config(argc, argv, &conf, &check_only);
    if (check_only) {
        config_print(&conf, stdout);
        return 0;
    }
    log_set_level(conf.log_level);
    log_set_thread("main");
    signal(SIGPIPE, SIG_IGN);

    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    struct shard *shards = calloc((size_t)conf.shards, sizeof(*shards));
    static struct acceptor acc;
    if (loop == NULL || shards == NULL) {
        log_error("start-up: out of memory");
        return 1;
    }
    if (acceptor_init(&acc, &conf, loop, shards, conf.shards) < 0) {
        acceptor_destroy(&acc);
        return 1;
    }
    for (int i = 0; i < conf.shards; i++) {
        if (shard_init(&shards[i], i, &conf, loop, &acc.answered[i]) < 0) {
            log_error("start-up: shard %d: out of memory", i);
            return 1;
        }
    }
    for (int i = 0; i < conf.shards; i++) {
        if (shard_start(&shards[i]) < 0) {
            log_error("start-up: cannot start shard thread %d", i);
            return 1;
        }
    }
    log_info("im-presence listening on %s:%d, %d shards, cache %s:%d db %d, queue %s:%d db %d", conf.host,
             conf.port, conf.shards, conf.cache.host, conf.cache.port, conf.cache.database, conf.queue.host,
             conf.queue.port, conf.queue.database);

    acceptor_run(&acc);

    log_set_thread("main");
    for (int i = 0; i < conf.shards; i++)
        shard_stop(&shards[i]);
    uint64_t served = 0;
    for (int i = 0; i < conf.shards; i++)
        for (int m = 0; m < PR_METHOD_COUNT; m++)
            served += shards[i].counters.requests[m];
    acceptor_destroy(&acc);
    for (int i = 0; i < conf.shards; i++)
        shard_destroy(&shards[i]);
    free(shards);
    ev_loop_destroy(loop);
    log_info("stopped: %llu requests served by shards, %llu connections accepted, %llu rejected",
             (unsigned long long)served, (unsigned long long)acc.counters.accepted,
             (unsigned long long)acc.counters.rejected);
    return 0;
}
