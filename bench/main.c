/* im-presence-bench: a load generator for im-presence, speaking its own framing.
 *
 *   im-presence-bench [-h HOST] [-p PORT] [-c CONNS] [-t THREADS] [-P PIPELINE | -R RATE]
 *                     [-m METHOD|mix=...] [-u USERS] [--dist uniform|zipf[:S]] [--preload]
 *                     [-s BYTES] [-g GATEWAY] [--warmup SECS] [-d SECS] [--json] [--echo-selftest]
 *
 * Closed loop (default): each connection keeps -P requests in flight. Open loop (-R): requests
 * follow a fixed schedule and latency counts from each request's scheduled send time.
 * One libev loop per thread; per-thread histograms are merged at the end. */
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/codec.h"
#include "echo.h"
#include "report.h"
#include "worker.h"
#include "workload.h"

#define PRELOAD_PIPELINE 64
#define PRELOAD_LIMIT_S 300.0

struct options {
    const char *host;        /* -h */
    const char *port;        /* -p */
    int conns;               /* -c */
    int threads;             /* -t */
    int pipeline;            /* -P */
    double rate;             /* -R, 0: closed loop */
    const char *method;      /* -m */
    long long users;         /* -u */
    const char *dist;        /* --dist */
    bool preload;            /* --preload */
    size_t message_bytes;    /* -s */
    const char *gateway;     /* -g */
    double warmup;           /* --warmup */
    double duration;         /* -d */
    double drain;            /* --drain */
    int max_outstanding;     /* --max-outstanding */
    bool json;               /* --json */
    bool echo;               /* --echo-selftest */
    unsigned long long seed; /* --seed */
    const char *service;     /* --service */
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: im-presence-bench [options]\n"
            "  -h HOST              server host (127.0.0.1)\n"
            "  -p PORT              server port (6000)\n"
            "  -c CONNS             connections in total (50)\n"
            "  -t THREADS           generator threads, one libev loop each (2, at most CONNS)\n"
            "  -P DEPTH             closed loop: requests in flight per connection (1)\n"
            "  -R RATE              open loop: requests/s in total, spread over connections and threads;\n"
            "                       latency counts from each request's scheduled send time\n"
            "  --max-outstanding N  open loop: outstanding cap per connection; the schedule waits (1024)\n"
            "  -m METHOD            bind | query | deliver | unbind | heartbeat |\n"
            "                       mix=query:80,bind:10,deliver:10 (weights) (query)\n"
            "  -u USERS             user ids 1..USERS (100000)\n"
            "  --dist D             uniform | zipf | zipf:S  (zipf: S = 0.99, id 1 hottest) (uniform)\n"
            "  --preload            first bind every id 1..USERS (pipelined), so queries hit\n"
            "  -s BYTES             deliver message size (64)\n"
            "  -g GATEWAY           gateway_addr for bind/unbind/heartbeat (bench-gw:7000)\n"
            "  --warmup SECS        run this long before measuring (1)\n"
            "  -d SECS              measure this long (5); -d 0 --preload: only the preload\n"
            "  --drain SECS         after the run, wait at most this long for responses (5)\n"
            "  --json               print one JSON object instead of the text report\n"
            "  --echo-selftest      run against an in-process echo server of the framing instead:\n"
            "                       the generator's own ceiling (-h/-p are ignored)\n"
            "  --seed N             random seed (1)\n"
            "  --service NAME       RpcHeader service_name (PresenceService)\n"
            "  --help\n");
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "im-presence-bench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

static long long parse_int(const char *s, const char *what, long long lo, long long hi)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || v < lo || v > hi) {
        fprintf(stderr, "im-presence-bench: %s '%s': expected a whole number from %lld to %lld\n", what, s, lo, hi);
        exit(2);
    }
    return v;
}

static double parse_secs(const char *s, const char *what, double lo)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= lo) || v > 86400.0) {
        fprintf(stderr, "im-presence-bench: %s '%s': expected a number of seconds >= %g\n", what, s, lo);
        exit(2);
    }
    return v;
}

static double parse_rate(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= 0.0) || v > 1e9) {
        fprintf(stderr, "im-presence-bench: -R '%s': expected requests per second, 0 to 1e9\n", s);
        exit(2);
    }
    return v;
}

static void parse_options(int argc, char **argv, struct options *o)
{
    enum { O_DIST = 256, O_PRELOAD, O_WARMUP, O_DRAIN, O_JSON, O_ECHO, O_SEED, O_SERVICE, O_MAXOUT, O_HELP };
    static const struct option longs[] = {
        {"dist", required_argument, NULL, O_DIST},       {"preload", no_argument, NULL, O_PRELOAD},
        {"warmup", required_argument, NULL, O_WARMUP},   {"drain", required_argument, NULL, O_DRAIN},
        {"json", no_argument, NULL, O_JSON},             {"echo-selftest", no_argument, NULL, O_ECHO},
        {"seed", required_argument, NULL, O_SEED},       {"service", required_argument, NULL, O_SERVICE},
        {"max-outstanding", required_argument, NULL, O_MAXOUT}, {"help", no_argument, NULL, O_HELP},
        {NULL, 0, NULL, 0}};
    *o = (struct options){.host = "127.0.0.1", .port = "6000", .conns = 50, .threads = 2, .pipeline = 1,
                          .method = "query", .users = 100000, .dist = "uniform", .message_bytes = 64,
                          .gateway = "bench-gw:7000", .warmup = 1.0, .duration = 5.0, .drain = 5.0,
                          .max_outstanding = 1024, .seed = 1, .service = CODEC_SERVICE};
    int opt;
    while ((opt = getopt_long(argc, argv, "h:p:c:t:P:R:m:u:s:g:d:", longs, NULL)) != -1) {
        switch (opt) {
        case 'h': o->host = optarg; break;
        case 'p': parse_int(optarg, "-p", 1, 65535); o->port = optarg; break;
        case 'c': o->conns = (int)parse_int(optarg, "-c", 1, 100000); break;
        case 't': o->threads = (int)parse_int(optarg, "-t", 1, 1024); break;
        case 'P': o->pipeline = (int)parse_int(optarg, "-P", 1, 65536); break;
        case 'R': o->rate = parse_rate(optarg); break;
        case 'm': o->method = optarg; break;
        case 'u': o->users = parse_int(optarg, "-u", 1, INT64_MAX / 2); break;
        case 's': o->message_bytes = (size_t)parse_int(optarg, "-s", 0, 64LL << 20); break;
        case 'g': o->gateway = optarg; break;
        case 'd': o->duration = parse_secs(optarg, "-d", 0.0); break;
        case O_DIST: o->dist = optarg; break;
        case O_PRELOAD: o->preload = true; break;
        case O_WARMUP: o->warmup = parse_secs(optarg, "--warmup", 0.0); break;
        case O_DRAIN: o->drain = parse_secs(optarg, "--drain", 0.0); break;
        case O_JSON: o->json = true; break;
        case O_ECHO: o->echo = true; break;
        case O_SEED: o->seed = (unsigned long long)parse_int(optarg, "--seed", 0, INT64_MAX); break;
        case O_SERVICE: o->service = optarg; break;
        case O_MAXOUT: o->max_outstanding = (int)parse_int(optarg, "--max-outstanding", 1, 1 << 20); break;
        case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind < argc)
        die("unexpected argument '%s' (see --help)", argv[optind]);
    if (o->duration == 0 && !o->preload)
        die("%s", "-d 0 only makes sense with --preload (bind the users, then stop)");
    if (o->threads > o->conns)
        o->threads = o->conns;
}

static void resolve(const char *host, const char *port, struct plan *p)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        fprintf(stderr, "im-presence-bench: cannot resolve %s:%s: %s\n", host, port, gai_strerror(rc));
        exit(2);
    }
    memcpy(&p->addr, res->ai_addr, res->ai_addrlen);
    p->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
}

/* Run a plan over `threads` workers sharing `conns` connections; merge their stats into *out.
 * Preload: ids lo..hi are split over the threads in proportion to their connections. */
static int run_plan(const struct plan *p, int conns, int threads, int64_t lo, int64_t hi, struct worker_stats *out)
{
    struct worker *ws = calloc((size_t)threads, sizeof(*ws));
    if (ws == NULL)
        return -1;
    int64_t ids = hi - lo + 1, next = lo;
    for (int i = 0; i < threads; i++) {
        struct worker *w = &ws[i];
        w->id = i;
        w->nthreads = threads;
        w->plan = p;
        w->nconns = conns / threads + (i < conns % threads);
        int64_t share = ids * w->nconns / conns; /* the last thread takes the remainder */
        w->seq_next = next;
        w->seq_end = i == threads - 1 ? hi + 1 : next + share;
        next = w->seq_end;
    }
    int started = 0, rc = 0;
    for (; started < threads; started++) {
        if (worker_start(&ws[started]) < 0) {
            fprintf(stderr, "im-presence-bench: cannot start thread %d\n", started);
            rc = -1;
            break;
        }
    }
    memset(out, 0, sizeof(*out));
    for (int m = 0; m < BENCH_METHODS; m++)
        hist_init(&out->hist[m]);
    for (int i = 0; i < started; i++) {
        worker_join(&ws[i]);
        if (ws[i].start_error[0] != '\0') {
            fprintf(stderr, "im-presence-bench: %s\n", ws[i].start_error);
            rc = -1;
        }
        stats_merge(out, &ws[i].stats);
    }
    free(ws);
    return rc;
}

static unsigned long long total_ok(const struct worker_stats *st)
{
    unsigned long long n = 0;
    for (int m = 0; m < BENCH_METHODS; m++)
        n += st->codes[m][0];
    return n;
}

int main(int argc, char **argv)
{
    static struct options o;
    static struct plan plan;
    static struct worker_stats stats; /* ~200 KiB of histograms: not on the stack */
    char err[256], mixbuf[128], distbuf[64], target[300];
    signal(SIGPIPE, SIG_IGN);
    parse_options(argc, argv, &o);

    if (mix_parse(&plan.mix, o.method, err, sizeof(err)) < 0 ||
        keydist_init(&plan.keys, o.dist, (uint64_t)o.users, err, sizeof(err)) < 0)
        die("%s", err);
    if (codec_check_gateway((const uint8_t *)o.gateway, strlen(o.gateway)) != NULL)
        die("-g '%s': a gateway is 1-255 printable ASCII bytes", o.gateway);
    uint8_t *message = malloc(o.message_bytes > 0 ? o.message_bytes : 1);
    if (message == NULL)
        die("%s", "out of memory");
    for (size_t i = 0; i < o.message_bytes; i++)
        message[i] = (uint8_t)('a' + i % 26);

    struct echo_server *echo = NULL;
    char echo_port[16];
    if (o.echo) {
        int port = 0;
        echo = echo_start(&port);
        if (echo == NULL)
            die("%s", "--echo-selftest: cannot start the echo server");
        snprintf(echo_port, sizeof(echo_port), "%d", port);
        o.host = "127.0.0.1";
        o.port = echo_port;
    }
    resolve(o.host, o.port, &plan);
    snprintf(target, sizeof(target), "%s:%s", o.host, o.port);

    plan.service = o.service;
    plan.gateway = o.gateway;
    plan.message = message;
    plan.message_len = o.message_bytes;
    plan.seed = o.seed;
    plan.max_outstanding = o.max_outstanding;

    struct run_info info = {
        .target = target, .echo = o.echo, .method = mix_name(&plan.mix, mixbuf, sizeof(mixbuf)),
        .dist = keydist_name(&plan.keys, distbuf, sizeof(distbuf)), .users = o.users,
        .connections = o.conns, .threads = o.threads, .pipeline = o.pipeline, .rate = o.rate,
        .max_outstanding = o.max_outstanding, .message_bytes = o.message_bytes, .warmup_s = o.warmup,
        .duration_s = o.duration};

    int rc = 0;
    if (o.preload) {
        struct plan pre = plan;
        pre.mode = PLAN_PRELOAD;
        pre.pipeline = PRELOAD_PIPELINE;
        pre.t_start = now_ns() + 20000000u;
        pre.t_measure = 0;
        pre.t_end = UINT64_MAX;
        pre.drain_ns = (uint64_t)(PRELOAD_LIMIT_S * 1e9);
        uint64_t t0 = now_ns();
        rc = run_plan(&pre, o.conns, o.threads, 1, o.users, &stats);
        info.preloaded = true;
        info.preload_s = (double)(now_ns() - t0) / 1e9;
        info.preload_ok = total_ok(&stats);
        info.preload_failed = (unsigned long long)o.users - info.preload_ok;
        if (!o.json)
            fprintf(stderr, "preload: %llu of %lld users bound in %.2f s%s%s\n", info.preload_ok, o.users,
                    info.preload_s, stats.first_error[0] ? "; first error: " : "", stats.first_error);
        if (rc < 0)
            goto out;
        if (o.duration == 0) { /* preload only */
            if (o.json)
                report_preload_json(stdout, &info);
            rc = info.preload_failed == 0 ? 0 : -1;
            goto out;
        }
    }

    plan.mode = o.rate > 0 ? PLAN_OPEN : PLAN_CLOSED;
    plan.pipeline = o.pipeline;
    plan.rate = o.rate / o.threads;
    plan.t_start = now_ns() + 50000000u; /* time to connect */
    plan.t_measure = plan.t_start + (uint64_t)(o.warmup * 1e9);
    plan.t_end = plan.t_measure + (uint64_t)(o.duration * 1e9);
    plan.drain_ns = (uint64_t)(o.drain * 1e9);
    rc = run_plan(&plan, o.conns, o.threads, 1, 0, &stats);
    if (o.json)
        report_json(stdout, &info, &stats);
    else
        report_text(stdout, &info, &stats);
    if (rc == 0) {
        unsigned long long answered = 0;
        for (int m = 0; m < BENCH_METHODS; m++)
            for (int c = 0; c < CODE_SLOTS; c++)
                answered += stats.codes[m][c];
        rc = answered > 0 ? 0 : -1;
    }
out:
    if (echo != NULL)
        echo_stop(echo);
    free(message);
    return rc < 0 ? 1 : 0;
}
