/* im-presence-drain-bench: the drain of one gateway's N sessions, and what other clients see
 * meanwhile (contract §8; issue #10's benchmark).
 *
 *   im-presence-drain-bench [-h HOST] [-p PORT] [-n SESSIONS] [-g GATEWAY] [-s SHARDS] [-q QUERIERS]
 *                           [--server-pid PID] [--tsv]
 *
 * Binds users 1..N to GATEWAY (pipelined, rounds of 1000), then Q other users to another gateway,
 * each on the drain's shard (the gateway's: SHARDS must be the server's thread_count), starts one
 * thread per querier that sends QueryRoute for its user one at a time, and calls DrainGateway.
 * Reports the drain's wall time, sessions per second, the server's CPU seconds for it (with
 * --server-pid) and the latency of the queries answered while it ran: count, p50, p99, max. */
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
#include "core/hash.h"

#define MAX_QUERIERS 16
#define MAX_SAMPLES (1u << 20)

struct options {
    const char *host;
    int port;
    long long sessions; /* -n */
    const char *gw;     /* -g */
    int shards;         /* -s */
    int queriers;       /* -q */
    int server_pid;     /* --server-pid */
    bool tsv;           /* --tsv: one tab-separated line, for bench/drain.sh */
};

static struct options opt = {"127.0.0.1", 6000, 100000, "bench-drain:7000", 4, 1, 0, false};

static double mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static _Atomic int phase; /* 0 before the drain, 1 during it, 2 stop */

struct querier {
    pthread_t thread;
    int64_t uid;
    double *ms; /* latencies of the queries answered during the drain */
    size_t n;
    long wrong; /* answers that were not OK with the querier's gateway */
    char err[160];
};

static void *query_loop(void *arg)
{
    struct querier *q = arg;
    const char *err = NULL;
    struct pc_client *c = pc_connect(opt.host, opt.port, 0, &err);
    if (c == NULL) {
        snprintf(q->err, sizeof(q->err), "connect: %s", err ? err : "?");
        return NULL;
    }
    int p;
    while ((p = atomic_load(&phase)) < 2) {
        double t0 = mono_ms();
        Mpim__QueryRouteResp *r = NULL;
        if (pc_query(c, q->uid, &r) < 0) {
            snprintf(q->err, sizeof(q->err), "query: %s", pc_error(c));
            break;
        }
        double t1 = mono_ms();
        /* Counted only if it was sent and answered while the drain ran. */
        if (p == 1 && atomic_load(&phase) == 1 && q->n < MAX_SAMPLES)
            q->ms[q->n++] = t1 - t0;
        q->wrong += r->result == NULL || r->result->code != MPIM__CODE__OK;
        protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    pc_close(c);
    return NULL;
}

static int bind_one(struct pc_client *c, int64_t uid, const char *gw)
{
    Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
    b.user_id = uid;
    b.gateway_addr = (ProtobufCBinaryData){strlen(gw), (uint8_t *)gw};
    return pc_send(c, PR_METHOD_BIND, &b.base);
}

/* Users first..last to gw, pipelined in rounds of 1000 (below max_inflight). 0, or -1. */
static int bind_range(struct pc_client *c, int64_t first, int64_t last, const char *gw)
{
    for (int64_t uid = first; uid <= last;) {
        int64_t end = uid + 999 < last ? uid + 999 : last;
        for (int64_t u = uid; u <= end; u++)
            if (bind_one(c, u, gw) < 0)
                return -1;
        if (pc_flush(c) < 0)
            return -1;
        for (int64_t u = uid; u <= end; u++) {
            ProtobufCMessage *m = NULL;
            if (pc_recv(c, PR_METHOD_BIND, &m) < 0)
                return -1;
            const Mpim__BindRouteResp *r = (const Mpim__BindRouteResp *)m;
            int code = r->result != NULL ? (int)r->result->code : 0;
            protobuf_c_message_free_unpacked(m, NULL);
            if (code != MPIM__CODE__OK) {
                fprintf(stderr, "drain-bench: bind %lld: %s\n", (long long)u, pc_code_name(code));
                return -1;
            }
        }
        uid = end + 1;
    }
    return 0;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: im-presence-drain-bench [-h HOST] [-p PORT] [-n SESSIONS] [-g GATEWAY] [-s SHARDS]\n"
               "                               [-q QUERIERS] [--server-pid PID] [--tsv]\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"server-pid", required_argument, NULL, 'P'},
                                             {"tsv", no_argument, NULL, 'T'},
                                             {"help", no_argument, NULL, 'H'},
                                             {NULL, 0, NULL, 0}};
    int o;
    while ((o = getopt_long(argc, argv, "h:p:n:g:s:q:", longopts, NULL)) != -1) {
        switch (o) {
        case 'h':
            opt.host = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 'n':
            opt.sessions = atoll(optarg);
            break;
        case 'g':
            opt.gw = optarg;
            break;
        case 's':
            opt.shards = atoi(optarg);
            break;
        case 'q':
            opt.queriers = atoi(optarg);
            break;
        case 'P':
            opt.server_pid = atoi(optarg);
            break;
        case 'T':
            opt.tsv = true;
            break;
        case 'H':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (opt.sessions < 1 || opt.shards < 1 || opt.queriers < 1 || opt.queriers > MAX_QUERIERS) {
        usage(stderr);
        return 2;
    }
    const char *err = NULL;
    struct pc_client *c = pc_connect(opt.host, opt.port, 0, &err);
    if (c == NULL) {
        fprintf(stderr, "drain-bench: connect: %s\n", err ? err : "?");
        return 1;
    }
    double t0 = mono_ms();
    if (bind_range(c, 1, opt.sessions, opt.gw) < 0) {
        fprintf(stderr, "drain-bench: binding failed: %s\n", pc_error(c));
        return 1;
    }
    double bind_ms = mono_ms() - t0;

    /* Queriers' users on the gateway's shard: the one that runs the drain. */
    static struct querier q[MAX_QUERIERS];
    uint32_t shard = hash_bytes_shard(opt.gw, strlen(opt.gw), (uint32_t)opt.shards);
    int64_t uid = opt.sessions + 1;
    for (int i = 0; i < opt.queriers; i++, uid++) {
        while (hash_shard(uid, (uint32_t)opt.shards) != shard)
            uid++;
        q[i].uid = uid;
        q[i].ms = malloc(MAX_SAMPLES * sizeof(double));
        if (q[i].ms == NULL || bind_range(c, uid, uid, "bench-other:1") < 0)
            return 1;
    }
    for (int i = 0; i < opt.queriers; i++)
        pthread_create(&q[i].thread, NULL, query_loop, &q[i]);
    usleep(100000); /* the queriers are connected and under way */

    double cpu0 = opt.server_pid > 0 ? proc_cpu_seconds(opt.server_pid) : -1;
    atomic_store(&phase, 1);
    double d0 = mono_ms();
    Mpim__DrainGatewayReq req = MPIM__DRAIN_GATEWAY_REQ__INIT;
    req.gateway_addr = (ProtobufCBinaryData){strlen(opt.gw), (uint8_t *)opt.gw};
    ProtobufCMessage *m = NULL;
    int rc = pc_call(c, PR_METHOD_DRAIN_GATEWAY, &req.base, &m);
    double drain_ms = mono_ms() - d0;
    atomic_store(&phase, 2);
    double cpu1 = opt.server_pid > 0 ? proc_cpu_seconds(opt.server_pid) : -1;
    for (int i = 0; i < opt.queriers; i++)
        pthread_join(q[i].thread, NULL);
    if (rc < 0) {
        fprintf(stderr, "drain-bench: DrainGateway: %s\n", pc_error(c));
        return 1;
    }
    const Mpim__DrainGatewayResp *d = (const Mpim__DrainGatewayResp *)m;
    int code = d->result != NULL ? (int)d->result->code : 0;
    long long removed = (long long)d->sessions_removed;
    protobuf_c_message_free_unpacked(m, NULL);

    size_t n = 0;
    long wrong = 0;
    for (int i = 0; i < opt.queriers; i++) {
        if (q[i].err[0] != '\0')
            fprintf(stderr, "drain-bench: querier %d: %s\n", i, q[i].err);
        n += q[i].n;
        wrong += q[i].wrong;
    }
    double *all = malloc((n > 0 ? n : 1) * sizeof(double));
    if (all == NULL)
        return 1;
    for (int i = 0, k = 0; i < opt.queriers; i++)
        for (size_t j = 0; j < q[i].n; j++)
            all[k++] = q[i].ms[j];
    qsort(all, n, sizeof(double), cmp_double);
    double p50 = n > 0 ? all[n / 2] : 0, p99 = n > 0 ? all[(size_t)((double)n * 0.99)] : 0;
    double max = n > 0 ? all[n - 1] : 0;
    double cpu = cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1;
    if (opt.tsv)
        printf("%lld\t%s\t%lld\t%.0f\t%.0f\t%.0f\t%.2f\t%zu\t%.2f\t%.2f\t%.2f\t%ld\n", opt.sessions,
               pc_code_name(code), removed, bind_ms, drain_ms, removed / (drain_ms / 1e3), cpu, n, p50, p99,
               max, wrong);
    else
        printf("bound %lld sessions in %.0f ms; DrainGateway: %s, %lld removed in %.0f ms (%.0f sessions/s, "
               "server CPU "
               "%.2f s); %zu queries meanwhile: p50 %.2f ms, p99 %.2f ms, max %.2f ms, %ld not OK\n",
               opt.sessions, bind_ms, pc_code_name(code), removed, drain_ms, removed / (drain_ms / 1e3), cpu,
               n, p50, p99, max, wrong);
    free(all);
    pc_close(c);
    return code == MPIM__CODE__OK && removed == opt.sessions && wrong == 0 ? 0 : 1;
}
