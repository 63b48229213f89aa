/* im-presence-batch-bench: one batch call of N ids against N single calls pipelined, on the same
 * users, at C connections (contract §7; issue #10's benchmark).
 *
 *   im-presence-batch-bench [-h HOST] [-p PORT] [-c CONNS] [-n IDS] [-u USERS] [-m query|deliver]
 *                           [-s BYTES] [--mode single|batch|both] [--preload] [--warmup SECS]
 *                           [-d SECS] [--server-pid PID] [--tsv]
 *
 * Each connection has its own thread and loops: pick N ids (uniform in 1..USERS), then either
 * send one BatchQueryRoute / BatchDeliver of them and wait for its answer, or pipeline N
 * QueryRoute / Deliver calls and wait for all N answers. "users" are ids answered. With
 * --server-pid, the server's CPU time (utime + stime from /proc/PID/stat) over the measured
 * window is divided by the users answered: server CPU seconds per user looked up, the number the
 * batch calls exist to cut. The blocking client (src/client) keeps this small; it measures
 * throughput and cost, not latency percentiles (im-presence-bench does those). */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proc_cpu.h"
#include "client/presence_client.h"

struct options {
    const char *host;
    int port;
    int conns;        /* -c */
    int ids;          /* -n: ids per round */
    long long users;  /* -u */
    bool deliver;     /* -m deliver */
    size_t bytes;     /* -s */
    const char *mode; /* --mode */
    bool preload;     /* --preload */
    double warmup;    /* --warmup */
    double duration;  /* -d */
    int server_pid;   /* --server-pid, 0: none */
    bool tsv;         /* --tsv: one tab-separated line per mode, for bench/batch.sh */
};

static struct options opt = {"127.0.0.1", 6000, 8, 100, 100000, false, 64, "both", false, 1.0, 5.0, 0, false};

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static _Atomic int phase; /* 0 warm-up, 1 measuring, 2 stop */

struct worker {
    pthread_t thread;
    int index;
    bool batch;
    uint64_t rng;
    uint64_t users;   /* ids answered while measuring */
    uint64_t rounds;  /* rounds completed while measuring */
    uint64_t refused; /* answers with a code other than OK / NOT_FOUND (call or entry) */
    char err[192];    /* first transport or protocol error */
};

static uint64_t next_rand(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static bool answered(int code)
{
    return code == MPIM__CODE__OK || code == MPIM__CODE__NOT_FOUND;
}

/* One round: the ids as one batch call, or as single calls pipelined. Returns the ids answered,
 * or -1 on a transport error (w->err set). */
static int round_trip(struct worker *w, struct pc_client *c, int64_t *ids, const uint8_t *msg)
{
    int n = opt.ids, got = 0;
    ProtobufCMessage *resp = NULL;
    if (w->batch) {
        Mpim__BatchQueryRouteReq q = MPIM__BATCH_QUERY_ROUTE_REQ__INIT;
        Mpim__BatchDeliverReq d = MPIM__BATCH_DELIVER_REQ__INIT;
        q.n_user_ids = d.n_user_ids = (size_t)n;
        q.user_ids = d.user_ids = ids;
        d.message = (ProtobufCBinaryData){opt.bytes, (uint8_t *)msg};
        int method = opt.deliver ? PR_METHOD_BATCH_DELIVER : PR_METHOD_BATCH_QUERY;
        if (pc_call(c, method, opt.deliver ? &d.base : &q.base, &resp) < 0)
            goto transport;
        const Mpim__Result *res = opt.deliver ? ((Mpim__BatchDeliverResp *)resp)->result
                                              : ((Mpim__BatchQueryRouteResp *)resp)->result;
        size_t entries = opt.deliver ? ((Mpim__BatchDeliverResp *)resp)->n_results
                                     : ((Mpim__BatchQueryRouteResp *)resp)->n_routes;
        if (res == NULL || res->code != MPIM__CODE__OK || entries != (size_t)n) {
            snprintf(w->err, sizeof(w->err), "batch call: code %d, %zu entries for %d ids", res ? (int)res->code : -1,
                     entries, n);
            protobuf_c_message_free_unpacked(resp, NULL);
            return -1;
        }
        for (size_t i = 0; i < entries; i++) {
            int code = opt.deliver ? (int)((Mpim__BatchDeliverResp *)resp)->results[i]->code
                                   : (int)((Mpim__BatchQueryRouteResp *)resp)->routes[i]->code;
            w->refused += !answered(code);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        return n;
    }
    for (int i = 0; i < n; i++) {
        Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
        Mpim__DeliverReq d = MPIM__DELIVER_REQ__INIT;
        q.user_id = d.user_id = ids[i];
        d.message = (ProtobufCBinaryData){opt.bytes, (uint8_t *)msg};
        if (pc_send(c, opt.deliver ? PR_METHOD_DELIVER : PR_METHOD_QUERY, opt.deliver ? &d.base : &q.base) < 0)
            goto transport;
    }
    if (pc_flush(c) < 0)
        goto transport;
    for (int i = 0; i < n; i++) {
        if (pc_recv(c, opt.deliver ? PR_METHOD_DELIVER : PR_METHOD_QUERY, &resp) < 0)
            goto transport;
        const Mpim__Result *res = opt.deliver ? ((Mpim__DeliverResp *)resp)->result
                                              : ((Mpim__QueryRouteResp *)resp)->result;
        w->refused += res == NULL || !answered((int)res->code);
        protobuf_c_message_free_unpacked(resp, NULL);
        got++;
    }
    return got;
transport:
    snprintf(w->err, sizeof(w->err), "%s", pc_error(c));
    return -1;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    const char *err = NULL;
    struct pc_client *c = pc_connect(opt.host, opt.port, 10000, &err);
    if (c == NULL) {
        snprintf(w->err, sizeof(w->err), "connect: %s", err);
        return NULL;
    }
    int64_t *ids = malloc((size_t)opt.ids * sizeof(*ids));
    uint8_t *msg = malloc(opt.bytes + 1);
    memset(msg, 'm', opt.bytes);
    int p;
    while (ids != NULL && (p = atomic_load(&phase)) < 2) {
        for (int i = 0; i < opt.ids; i++)
            ids[i] = 1 + (int64_t)(next_rand(&w->rng) % (uint64_t)opt.users);
        int n = round_trip(w, c, ids, msg);
        if (n < 0)
            break;
        if (p == 1 && atomic_load(&phase) == 1) { /* the whole round inside the window */
            w->users += (uint64_t)n;
            w->rounds++;
        }
    }
    free(ids);
    free(msg);
    pc_close(c);
    return NULL;
}

/* Bind every id 1..users once (pipelined), so that lookups hit. */
static int preload(void)
{
    const char *err = NULL;
    struct pc_client *c = pc_connect(opt.host, opt.port, 30000, &err);
    if (c == NULL) {
        fprintf(stderr, "im-presence-batch-bench: preload: connect: %s\n", err);
        return -1;
    }
    enum { DEPTH = 256 };
    for (long long uid = 1; uid <= opt.users; uid += DEPTH) {
        long long last = uid + DEPTH - 1 < opt.users ? uid + DEPTH - 1 : opt.users;
        for (long long u = uid; u <= last; u++) {
            Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
            b.user_id = u;
            b.gateway_addr = (ProtobufCBinaryData){13, (uint8_t *)"bench-gw:7000"};
            pc_send(c, PR_METHOD_BIND, &b.base);
        }
        if (pc_flush(c) < 0)
            goto fail;
        for (long long u = uid; u <= last; u++) {
            ProtobufCMessage *m = NULL;
            if (pc_recv(c, PR_METHOD_BIND, &m) < 0)
                goto fail;
            protobuf_c_message_free_unpacked(m, NULL);
        }
    }
    pc_close(c);
    return 0;
fail:
    fprintf(stderr, "im-presence-batch-bench: preload: %s\n", pc_error(c));
    pc_close(c);
    return -1;
}

struct result {
    double users_per_s, rounds_per_s, cpu_s, cpu_us_per_user;
    uint64_t refused;
};

static int run(bool batch, struct result *out)
{
    struct worker *ws = calloc((size_t)opt.conns, sizeof(*ws));
    if (ws == NULL)
        return -1;
    atomic_store(&phase, 0);
    for (int i = 0; i < opt.conns; i++) {
        ws[i] = (struct worker){.index = i, .batch = batch, .rng = 0x5eed + (uint64_t)i * 7919};
        pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]);
    }
    struct timespec warm = {(time_t)opt.warmup, (long)((opt.warmup - (time_t)opt.warmup) * 1e9)};
    nanosleep(&warm, NULL);
    double cpu0 = opt.server_pid ? proc_cpu_seconds(opt.server_pid) : 0, t0 = mono_s();
    atomic_store(&phase, 1);
    struct timespec dur = {(time_t)opt.duration, (long)((opt.duration - (time_t)opt.duration) * 1e9)};
    nanosleep(&dur, NULL);
    atomic_store(&phase, 2);
    double t1 = mono_s(), cpu1 = opt.server_pid ? proc_cpu_seconds(opt.server_pid) : 0;
    uint64_t users = 0, rounds = 0, refused = 0;
    int rc = 0;
    for (int i = 0; i < opt.conns; i++) {
        pthread_join(ws[i].thread, NULL);
        users += ws[i].users;
        rounds += ws[i].rounds;
        refused += ws[i].refused;
        if (ws[i].err[0] != '\0' && rc == 0) {
            fprintf(stderr, "im-presence-batch-bench: connection %d: %s\n", i, ws[i].err);
            rc = -1;
        }
    }
    free(ws);
    out->users_per_s = (double)users / (t1 - t0);
    out->rounds_per_s = (double)rounds / (t1 - t0);
    out->cpu_s = opt.server_pid ? cpu1 - cpu0 : -1;
    out->cpu_us_per_user = opt.server_pid && users > 0 ? out->cpu_s / (double)users * 1e6 : -1;
    out->refused = refused;
    return rc;
}

static void print(const char *what, const struct result *r)
{
    if (opt.tsv) { /* mode method conns ids users/s rounds/s cpu_s cpu_us/user refused */
        printf("%s\t%s\t%d\t%d\t%.0f\t%.0f\t%.3f\t%.3f\t%llu\n", what, opt.deliver ? "deliver" : "query", opt.conns,
               opt.ids, r->users_per_s, r->rounds_per_s, r->cpu_s, r->cpu_us_per_user,
               (unsigned long long)r->refused);
        return;
    }
    printf("%-7s %-7s c=%d n=%d: %10.0f users/s %8.0f rounds/s", what, opt.deliver ? "deliver" : "query",
           opt.conns, opt.ids, r->users_per_s, r->rounds_per_s);
    if (r->cpu_s >= 0)
        printf("  server CPU %.2f s = %.2f us/user", r->cpu_s, r->cpu_us_per_user);
    if (r->refused > 0)
        printf("  (%llu answers neither OK nor NOT_FOUND)", (unsigned long long)r->refused);
    putchar('\n');
}

static void usage(FILE *f)
{
    fprintf(f, "usage: im-presence-batch-bench [-h HOST] [-p PORT] [-c CONNS] [-n IDS] [-u USERS]\n"
               "         [-m query|deliver] [-s BYTES] [--mode single|batch|both] [--preload]\n"
               "         [--warmup SECS] [-d SECS] [--server-pid PID] [--tsv]\n"
               "  one batch call of IDS ids against IDS single calls pipelined, CONNS connections\n"
               "  (8), IDS 100, USERS 100000, 64-byte messages, 1 s warm-up, 5 s measured; with\n"
               "  --server-pid the server's CPU seconds per user answered (/proc/PID/stat)\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"mode", required_argument, NULL, 'M'},   {"preload", no_argument, NULL, 'L'},
        {"warmup", required_argument, NULL, 'W'}, {"server-pid", required_argument, NULL, 'S'},
        {"tsv", no_argument, NULL, 'T'},          {"help", no_argument, NULL, 'H'},
        {NULL, 0, NULL, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "h:p:c:n:u:m:s:d:", longopts, NULL)) != -1) {
        switch (o) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'c': opt.conns = atoi(optarg); break;
        case 'n': opt.ids = atoi(optarg); break;
        case 'u': opt.users = atoll(optarg); break;
        case 'm': opt.deliver = strcmp(optarg, "deliver") == 0; break;
        case 's': opt.bytes = (size_t)atoll(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'M': opt.mode = optarg; break;
        case 'L': opt.preload = true; break;
        case 'W': opt.warmup = atof(optarg); break;
        case 'S': opt.server_pid = atoi(optarg); break;
        case 'T': opt.tsv = true; break;
        case 'H': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    bool single = strcmp(opt.mode, "single") == 0 || strcmp(opt.mode, "both") == 0;
    bool batch = strcmp(opt.mode, "batch") == 0 || strcmp(opt.mode, "both") == 0;
    if (optind < argc || opt.port <= 0 || opt.conns <= 0 || opt.ids <= 0 || opt.users <= 0 || opt.duration <= 0 ||
        (!single && !batch)) {
        usage(stderr);
        return 2;
    }
    if (opt.server_pid && proc_cpu_seconds(opt.server_pid) < 0) {
        fprintf(stderr, "im-presence-batch-bench: cannot read /proc/%d/stat\n", opt.server_pid);
        return 2;
    }
    if (opt.preload && preload() < 0)
        return 1;
    struct result rs = {0}, rb = {0};
    if (single && run(false, &rs) < 0)
        return 1;
    if (single)
        print("single", &rs);
    if (batch && run(true, &rb) < 0)
        return 1;
    if (batch)
        print("batch", &rb);
    if (!opt.tsv && single && batch && rs.cpu_us_per_user > 0 && rb.cpu_us_per_user > 0)
        printf("batch/single: %.2fx users/s, %.2fx less server CPU per user\n", rb.users_per_s / rs.users_per_s,
               rs.cpu_us_per_user / rb.cpu_us_per_user);
    return 0;
}
