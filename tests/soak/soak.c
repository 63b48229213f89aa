/* Soak: im-presence under a mixed, pipelined load for a while, with Redis faults in the middle.
 *
 *   soak [--seconds N] [--rss-growth MIB]      (defaults 75 s, 32 MiB)
 *
 * Starts two redis-servers (cache, queue) and im-presence (thread_count 4, Redis timeouts of
 * 500 ms, max_retries 2, retry_interval 100 ms) in a temporary directory. Sixteen connections,
 * one thread each, send batches of pipelined Bind/Query/Deliver/Unbind/Heartbeat requests for
 * users that only that thread touches, so the answer to every request is predicted by a model
 * of the thread's own users. A subscriber (PSUBSCRIBE user:*) records every message published.
 * Once the cache Redis is stopped for a second and restarted on its port (losing every route),
 * once the queue Redis is paused for 1.5 s.
 *
 * Passes when: the server is alive and serving at the end and exits 0 on SIGTERM; every request
 * got exactly one answer and no connection failed; every answer fits its request (the model's
 * answer wherever the state is certain; UNAVAILABLE only during or just after a fault); every
 * Deliver answered delivered=true reached the subscriber, once; the server counted exactly the
 * requests sent; its RSS after the load, once idle, is within --rss-growth of before (raise it
 * for a sanitizer build of the server, whose allocator keeps freed memory in quarantine).
 * Prints the figures and a last line "soak: 1 passed, 0 failed" (exit 0) or
 * "soak: 0 passed, 1 failed" (exit 1). Every process it started is killed on any exit. */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "client/presence_client.h"
#include "proc.h"

#define NCONN 16 /* client connections, one thread each */
#define USERS 64 /* users per connection */
#define BATCH 64 /* requests per pipelined batch */
#define SHARDS 4 /* thread_count */
#define REDIS_TIMEOUT_MS 500
#define MAX_RETRIES 2
#define RETRY_MS 100
#define CLIENT_TIMEOUT_MS 10000 /* far above any bound the server promises */
/* A fault's effects may last this long after it ends: reconnect backoff (up to 2 s + 25 %), one
 * Redis timeout, a Deliver's retries, scheduling on a loaded machine. */
#define FAULT_GRACE_MS 5000
#define CACHE_DOWN_MS 1000
#define QUEUE_PAUSE_MS 1500
#define IDLE_BEFORE_RSS_MS 3000
/* Growth allowed once idle again: the acceptor keeps up to 4096 request objects on its free
 * list, malloc keeps freed buffers in its per-thread arenas, hiredis and link buffers grew to
 * the peak. A leak of even 2 bytes per request would exceed it over the default run. */
#define RSS_GROWTH_DEFAULT_MIB 32
#define LAT_BIN_US 10
#define LAT_BINS 100000 /* 10 us bins up to 1 s; slower answers land in the last */

/* ------------------------------------------------------------------ processes */

static char g_dir[64]; /* the temporary directory */

/* Async-signal-safe: SIGKILL every child (SIGCONT first: a paused Redis must be able to die). */
static void kill_all(void)
{
    tp_kill_all(NULL, 0);
}

static void on_fatal_signal(int sig)
{
    kill_all();
    signal(sig, SIG_DFL);
    raise(sig);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "soak: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    kill_all();
    printf("soak: 0 passed, 1 failed\n");
    fflush(stdout);
    exit(1);
}

static int free_port(void)
{
    int port = tp_free_port();
    if (port < 0)
        die("cannot find a free port: %s", strerror(errno));
    return port;
}

static long long rss_bytes(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long long kb = -1;
    while (fgets(line, sizeof(line), f) != NULL)
        if (sscanf(line, "VmRSS: %lld kB", &kb) == 1)
            break;
    fclose(f);
    return kb < 0 ? -1 : kb * 1024;
}

/* ---------------------------------------------------------------------- Redis */

/* The subscriber must never be cut off by Redis for falling behind. */
static const char *const redis_args[] = {"--client-output-buffer-limit", "pubsub 0 0 0", NULL};

/* Start on a free port (moving to another if that one is taken meanwhile) or, on a restart,
 * on r->port again; wait for PING. */
static void redis_start(struct tp_redis *r, bool new_port)
{
    if (tp_redis_start(r, new_port, 40, 50) == 0)
        return;
    tp_print_tail(r->log, 20);
    die("redis-server %s did not start on port %d", r->name, r->port);
}

static void redis_init(struct tp_redis *r, const char *name)
{
    if (tp_redis_init(r, g_dir, name) != 0)
        die("%s", tp_error());
    r->extra_args = redis_args;
    redis_start(r, true);
}

/* ------------------------------------------------------------------ HTTP GET */

static int http_status(int port, const char *path)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = tp_loopback(port);
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    int status = -1;
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "GET %s HTTP/1.0\r\n\r\n", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && send(fd, buf, (size_t)n, MSG_NOSIGNAL) == n) {
        ssize_t got = recv(fd, buf, sizeof(buf) - 1, 0);
        if (got > 0) {
            buf[got] = '\0';
            if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1)
                status = -1;
        }
    }
    close(fd);
    return status;
}

/* ------------------------------------------------------------ fault windows */

/* When each fault began and ended (ms on tp_mono_ms's clock); an end of 0 means still going on. */
struct fault {
    _Atomic double start;
    _Atomic double end;
};
static struct fault g_faults[4];
static atomic_int g_nfaults;
/* Bumped just before the cache Redis (and every route in it) goes away. */
static atomic_int g_cache_gen;
static atomic_bool g_stop;

static int fault_begin(void)
{
    int i = atomic_load(&g_nfaults);
    atomic_store(&g_faults[i].end, 0.0);
    atomic_store(&g_faults[i].start, tp_mono_ms());
    atomic_store(&g_nfaults, i + 1);
    return i;
}

static void fault_end(int i)
{
    atomic_store(&g_faults[i].end, tp_mono_ms());
}

/* The fault that began last before t, or -1. */
static int fault_at(double t)
{
    int n = atomic_load(&g_nfaults), k = -1;
    for (int i = 0; i < n; i++)
        if (atomic_load(&g_faults[i].start) <= t)
            k = i;
    return k;
}

/* Could [t0, t1] have met a fault or its after-effects? */
static bool during_fault(double t0, double t1)
{
    int n = atomic_load(&g_nfaults);
    for (int i = 0; i < n; i++) {
        double start = atomic_load(&g_faults[i].start), end = atomic_load(&g_faults[i].end);
        if (end == 0.0)
            end = 1e300;
        if (t1 >= start && t0 <= end + FAULT_GRACE_MS)
            return true;
    }
    return false;
}

/* ------------------------------------------------------------------- workers */

enum user_state { U_NONE, U_KNOWN, U_UNKNOWN };

struct user {
    enum user_state state;
    char gw[48];      /* U_KNOWN: its gateway */
    char last_gw[48]; /* the last gateway this thread bound it to ("" if never) */
};

struct op {
    int method;
    int u;       /* index into users */
    char gw[48]; /* Bind / Unbind / Heartbeat */
    uint64_t id; /* Deliver: the message id */
};

struct u64vec {
    uint64_t *v;
    size_t n, cap;
};

static void vec_push(struct u64vec *a, uint64_t x)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 4096;
        a->v = realloc(a->v, a->cap * sizeof(*a->v));
        if (a->v == NULL)
            die("out of memory");
    }
    a->v[a->n++] = x;
}

struct worker {
    int index;
    pthread_t thread;
    int port;
    uint64_t rng;
    struct user users[USERS];
    int seen_gen;         /* cache generation the model is valid for */
    uint64_t gw_counter;  /* makes every bound gateway unique */
    uint64_t deliver_seq; /* ids handed out so far */
    /* results */
    uint64_t sent, answered;
    uint64_t by_code[PR_CODE_COUNT];
    uint64_t by_method[PR_METHOD_COUNT];
    uint64_t strict_checks; /* answers compared with a certain prediction */
    uint64_t unavailable_delivers;
    struct u64vec delivered;   /* ids answered delivered=true */
    struct u64vec unavailable; /* ids answered UNAVAILABLE (may have been published) */
    uint32_t *lat;             /* LAT_BINS bins */
    double lat_max;
    double last_unavailable[4]; /* per fault: when its last UNAVAILABLE answer was read */
    bool failed;
    char why[512];
};

static int64_t uid_of(const struct worker *w, int u)
{
    return (int64_t)(w->index + 1) * 1000000 + u;
}

static uint64_t next_rand(struct worker *w)
{
    w->rng ^= w->rng << 13;
    w->rng ^= w->rng >> 7;
    w->rng ^= w->rng << 17;
    return w->rng;
}

static void fail(struct worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct worker *w, const char *fmt, ...)
{
    if (w->failed)
        return;
    w->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->why, sizeof(w->why), fmt, ap);
    va_end(ap);
}

static void forget_all(struct worker *w)
{
    for (int u = 0; u < USERS; u++)
        w->users[u].state = U_UNKNOWN;
}

/* Draw the next request. */
static void draw(struct worker *w, struct op *op)
{
    memset(op, 0, sizeof(*op));
    op->u = (int)(next_rand(w) % USERS);
    struct user *user = &w->users[op->u];
    int kind = (int)(next_rand(w) % 100);
    int64_t uid = uid_of(w, op->u);
    if (kind < 15) {
        op->method = PR_METHOD_BIND;
        snprintf(op->gw, sizeof(op->gw), "g%" PRId64 "-%" PRIu64 ":7000", uid, ++w->gw_counter);
    } else if (kind < 50) {
        op->method = PR_METHOD_QUERY;
    } else if (kind < 75) {
        op->method = PR_METHOD_DELIVER;
        op->id = (uint64_t)w->index << 40 | w->deliver_seq++;
    } else {
        op->method = kind < 85 ? PR_METHOD_UNBIND : PR_METHOD_HEARTBEAT;
        const char *cur = user->state == U_KNOWN ? user->gw : user->last_gw;
        if (cur[0] != '\0' && next_rand(w) % 4 != 0)
            snprintf(op->gw, sizeof(op->gw), "%s", cur);
        else
            snprintf(op->gw, sizeof(op->gw), "g%" PRId64 "-stale:1", uid);
    }
}

static int send_op(struct pc_client *c, const struct worker *w, const struct op *op)
{
    int64_t uid = uid_of(w, op->u);
    ProtobufCBinaryData gw = {.len = strlen(op->gw), .data = (uint8_t *)op->gw};
    switch (op->method) {
    case PR_METHOD_BIND: {
        Mpim__BindRouteReq r = MPIM__BIND_ROUTE_REQ__INIT;
        r.user_id = uid;
        r.gateway_addr = gw;
        return pc_send(c, op->method, &r.base);
    }
    case PR_METHOD_QUERY: {
        Mpim__QueryRouteReq r = MPIM__QUERY_ROUTE_REQ__INIT;
        r.user_id = uid;
        return pc_send(c, op->method, &r.base);
    }
    case PR_METHOD_DELIVER: {
        /* The id, the user (checked against the channel) and some padding. */
        char msg[320];
        int n = snprintf(msg, sizeof(msg), "soak:%016" PRIx64 ":%" PRId64 ":", op->id, uid);
        int pad = (int)(op->id * 2654435761u % 200);
        memset(msg + n, 'p', (size_t)pad);
        Mpim__DeliverReq r = MPIM__DELIVER_REQ__INIT;
        r.user_id = uid;
        r.message.data = (uint8_t *)msg;
        r.message.len = (size_t)(n + pad);
        r.message_type.data = (uint8_t *)"soak";
        r.message_type.len = 4;
        return pc_send(c, op->method, &r.base);
    }
    case PR_METHOD_UNBIND: {
        Mpim__UnbindRouteReq r = MPIM__UNBIND_ROUTE_REQ__INIT;
        r.user_id = uid;
        r.gateway_addr = gw;
        return pc_send(c, op->method, &r.base);
    }
    default: {
        Mpim__HeartbeatReq r = MPIM__HEARTBEAT_REQ__INIT;
        r.user_id = uid;
        r.gateway_addr = gw;
        return pc_send(c, op->method, &r.base);
    }
    }
}

static bool bytes_is(ProtobufCBinaryData b, const char *s)
{
    size_t n = strlen(s);
    return b.len == n && (n == 0 || memcmp(b.data, s, n) == 0);
}

static const Mpim__Result *result_of(int method, const ProtobufCMessage *m)
{
    switch (method) {
    case PR_METHOD_BIND:
        return ((const Mpim__BindRouteResp *)m)->result;
    case PR_METHOD_QUERY:
        return ((const Mpim__QueryRouteResp *)m)->result;
    case PR_METHOD_DELIVER:
        return ((const Mpim__DeliverResp *)m)->result;
    case PR_METHOD_UNBIND:
        return ((const Mpim__UnbindRouteResp *)m)->result;
    default:
        return ((const Mpim__HeartbeatResp *)m)->result;
    }
}

/* Check one answer against the model and advance the model. `wiped`: the cache lost every
 * route while this batch ran, so nothing about routes is certain; `faulty`: UNAVAILABLE and a
 * "not published" msg are allowed. */
static void check(struct worker *w, const struct op *op, const ProtobufCMessage *m, bool wiped, bool faulty,
                  double t1)
{
    struct user *user = &w->users[op->u];
    int64_t uid = uid_of(w, op->u);
    const char *name = request_method_name(op->method);
    const Mpim__Result *res = result_of(op->method, m);
    int code = res != NULL ? (int)res->code : 0;
    const char *msg = res != NULL && res->msg != NULL ? res->msg : "";
    if (code >= 0 && code < PR_CODE_COUNT)
        w->by_code[code]++;
    w->by_method[op->method]++;
    bool certain = !wiped && user->state != U_UNKNOWN;
    if (certain)
        w->strict_checks++;

    if (code == MPIM__CODE__UNAVAILABLE) {
        if (!faulty)
            fail(w, "%s of user %" PRId64 ": UNAVAILABLE '%s' with no fault going on", name, uid, msg);
        int k = fault_at(t1);
        if (k >= 0 && t1 > w->last_unavailable[k])
            w->last_unavailable[k] = t1;
        if (op->method == PR_METHOD_BIND || op->method == PR_METHOD_UNBIND)
            user->state = U_UNKNOWN; /* it may or may not have run */
        if (op->method == PR_METHOD_BIND)
            snprintf(user->last_gw, sizeof(user->last_gw), "%s", op->gw);
        if (op->method == PR_METHOD_DELIVER) {
            w->unavailable_delivers++;
            vec_push(&w->unavailable, op->id);
        }
        return;
    }
    if (code != MPIM__CODE__OK && code != MPIM__CODE__NOT_FOUND) {
        fail(w, "%s of user %" PRId64 ": %s '%s'", name, uid, pc_code_name(code), msg);
        return;
    }

    char prefix[32];
    snprintf(prefix, sizeof(prefix), "g%" PRId64 "-", uid);
    switch (op->method) {
    case PR_METHOD_BIND: {
        const Mpim__BindRouteResp *r = (const Mpim__BindRouteResp *)m;
        char key[48];
        snprintf(key, sizeof(key), "user:route:%" PRId64, uid);
        if (code != MPIM__CODE__OK || r->route_key == NULL || strcmp(r->route_key, key) != 0)
            fail(w, "Bind of user %" PRId64 ": %s route_key '%s', want OK %s: another request's answer?", uid,
                 pc_code_name(code), r->route_key ? r->route_key : "", key);
        if (msg[0] != '\0' && !faulty)
            fail(w, "Bind of user %" PRId64 ": msg '%s' with no fault going on", uid, msg);
        user->state = U_KNOWN;
        snprintf(user->gw, sizeof(user->gw), "%s", op->gw);
        snprintf(user->last_gw, sizeof(user->last_gw), "%s", op->gw);
        break;
    }
    case PR_METHOD_QUERY: {
        const Mpim__QueryRouteResp *r = (const Mpim__QueryRouteResp *)m;
        bool shape = code == MPIM__CODE__OK ? r->is_online && r->gateway_addr.len > strlen(prefix) &&
                                                  memcmp(r->gateway_addr.data, prefix, strlen(prefix)) == 0
                                            : !r->is_online && r->gateway_addr.len == 0;
        if (!shape) {
            fail(w, "Query of user %" PRId64 ": %s online=%d gateway '%.*s': not this user's answer", uid,
                 pc_code_name(code), r->is_online, (int)r->gateway_addr.len, r->gateway_addr.data);
            break;
        }
        if (certain) {
            if (user->state == U_KNOWN && (code != MPIM__CODE__OK || !bytes_is(r->gateway_addr, user->gw)))
                fail(w, "Query of user %" PRId64 ": %s '%.*s', want OK '%s'", uid, pc_code_name(code),
                     (int)r->gateway_addr.len, r->gateway_addr.data, user->gw);
            if (user->state == U_NONE && code != MPIM__CODE__NOT_FOUND)
                fail(w, "Query of user %" PRId64 ": %s '%.*s', want NOT_FOUND", uid, pc_code_name(code),
                     (int)r->gateway_addr.len, r->gateway_addr.data);
        } else if (!wiped) {
            /* Learn the state from the answer. */
            user->state = code == MPIM__CODE__OK ? U_KNOWN : U_NONE;
            snprintf(user->gw, sizeof(user->gw), "%.*s", (int)r->gateway_addr.len, r->gateway_addr.data);
        }
        break;
    }
    case PR_METHOD_DELIVER: {
        const Mpim__DeliverResp *r = (const Mpim__DeliverResp *)m;
        int64_t now = tp_wall_ms();
        if (r->timestamp < now - 60000 || r->timestamp > now + 60000)
            fail(w, "Deliver to user %" PRId64 ": timestamp %" PRId64 " is not now", uid,
                 (int64_t)r->timestamp);
        if (code == MPIM__CODE__OK && !r->delivered)
            fail(w, "Deliver to user %" PRId64 ": OK but delivered=false with a subscriber on user:*", uid);
        if (code == MPIM__CODE__NOT_FOUND && r->delivered)
            fail(w, "Deliver to user %" PRId64 ": NOT_FOUND but delivered=true", uid);
        if (certain && (code == MPIM__CODE__OK) != (user->state == U_KNOWN))
            fail(w, "Deliver to user %" PRId64 ": %s, but the user is %s", uid, pc_code_name(code),
                 user->state == U_KNOWN ? "bound" : "not bound");
        if (code == MPIM__CODE__OK && r->delivered)
            vec_push(&w->delivered, op->id);
        if (!certain && !wiped && code == MPIM__CODE__NOT_FOUND)
            user->state = U_NONE;
        break;
    }
    case PR_METHOD_UNBIND: {
        const Mpim__UnbindRouteResp *r = (const Mpim__UnbindRouteResp *)m;
        bool match = user->state == U_KNOWN && strcmp(user->gw, op->gw) == 0;
        if (code != MPIM__CODE__OK)
            fail(w, "Unbind of user %" PRId64 ": %s, want OK", uid, pc_code_name(code));
        else if (certain && r->unbound != match)
            fail(w, "Unbind of user %" PRId64 " gateway %s: unbound=%d, want %d", uid, op->gw, r->unbound,
                 match);
        if (r->unbound && msg[0] != '\0' && !faulty)
            fail(w, "Unbind of user %" PRId64 ": msg '%s' with no fault going on", uid, msg);
        if (r->unbound)
            user->state = U_NONE;
        break;
    }
    default: {
        const Mpim__HeartbeatResp *r = (const Mpim__HeartbeatResp *)m;
        bool match = user->state == U_KNOWN && strcmp(user->gw, op->gw) == 0;
        if (code != MPIM__CODE__OK)
            fail(w, "Heartbeat of user %" PRId64 ": %s, want OK", uid, pc_code_name(code));
        else if (certain && r->refreshed != match)
            fail(w, "Heartbeat of user %" PRId64 " gateway %s: refreshed=%d, want %d", uid, op->gw,
                 r->refreshed, match);
        if (r->refreshed && !certain && !wiped) {
            user->state = U_KNOWN;
            snprintf(user->gw, sizeof(user->gw), "%s", op->gw);
        }
        break;
    }
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    const char *err = NULL;
    struct pc_client *c = pc_connect("127.0.0.1", w->port, CLIENT_TIMEOUT_MS, &err);
    if (c == NULL) {
        fail(w, "connect: %s", err ? err : "?");
        return NULL;
    }
    struct op ops[BATCH];
    ProtobufCMessage *resp[BATCH];
    w->seen_gen = atomic_load(&g_cache_gen);
    while (!atomic_load(&g_stop) && !w->failed) {
        int gen0 = atomic_load(&g_cache_gen);
        if (gen0 != w->seen_gen) {
            forget_all(w); /* the cache went away between batches */
            w->seen_gen = gen0;
        }
        double t0 = tp_mono_ms();
        for (int i = 0; i < BATCH; i++) {
            draw(w, &ops[i]);
            if (send_op(c, w, &ops[i]) < 0) {
                fail(w, "send: %s", pc_error(c));
                break;
            }
        }
        if (w->failed)
            break;
        if (pc_flush(c) < 0) {
            fail(w, "flush: %s", pc_error(c));
            break;
        }
        w->sent += BATCH;
        int got = 0;
        for (; got < BATCH; got++) {
            resp[got] = NULL;
            if (pc_recv(c, ops[got].method, &resp[got]) < 0) {
                fail(w, "answer %d of a batch of %d (%s): %s", got + 1, BATCH,
                     request_method_name(ops[got].method), pc_error(c));
                break;
            }
            double ms = tp_mono_ms() - t0;
            long bin = (long)(ms * 1000.0 / LAT_BIN_US);
            w->lat[bin < LAT_BINS ? bin : LAT_BINS - 1]++;
            if (ms > w->lat_max)
                w->lat_max = ms;
        }
        w->answered += (uint64_t)got;
        double t1 = tp_mono_ms();
        int gen1 = atomic_load(&g_cache_gen);
        bool wiped = gen1 != gen0;
        bool faulty = during_fault(t0, t1);
        for (int i = 0; i < got; i++) {
            check(w, &ops[i], resp[i], wiped, faulty, t1);
            protobuf_c_message_free_unpacked(resp[i], NULL);
        }
        if (wiped) {
            forget_all(w);
            w->seen_gen = gen1;
        }
    }
    pc_close(c);
    return NULL;
}

/* ---------------------------------------------------------------- subscriber */

struct subscriber {
    pthread_t thread;
    int port;
    struct u64vec ids; /* every soak message received, in order */
    uint64_t wrong_channel;
    bool got_end;
    bool failed;
    char why[256];
    _Atomic double deadline; /* 0: none yet */
    _Atomic bool ready;      /* PSUBSCRIBE confirmed (or failed: see failed) */
};

static void *subscriber_main(void *arg)
{
    struct subscriber *s = arg;
    struct timeval tv = {5, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    if (c == NULL || c->err) {
        snprintf(s->why, sizeof(s->why), "subscriber: connect: %s", c ? c->errstr : "oom");
        s->failed = true;
        atomic_store(&s->ready, true);
        redisFree(c);
        return NULL;
    }
    redisReply *r = redisCommand(c, "PSUBSCRIBE user:*");
    bool ok = r != NULL && r->type == REDIS_REPLY_ARRAY;
    freeReplyObject(r);
    if (!ok) {
        snprintf(s->why, sizeof(s->why), "subscriber: PSUBSCRIBE failed: %s", c->errstr);
        s->failed = true;
        atomic_store(&s->ready, true);
        redisFree(c);
        return NULL;
    }
    atomic_store(&s->ready, true);
    while (!s->got_end) {
        double deadline = atomic_load(&s->deadline);
        if (deadline != 0.0 && tp_mono_ms() > deadline)
            break;
        void *reply = NULL;
        if (redisGetReplyFromReader(c, &reply) != REDIS_OK) {
            snprintf(s->why, sizeof(s->why), "subscriber: %s", c->errstr);
            s->failed = true;
            break;
        }
        if (reply == NULL) {
            struct pollfd p = {.fd = c->fd, .events = POLLIN};
            if (poll(&p, 1, 100) > 0 && redisBufferRead(c) != REDIS_OK) {
                snprintf(s->why, sizeof(s->why), "subscriber lost its connection: %s", c->errstr);
                s->failed = true;
                break;
            }
            continue;
        }
        r = reply;
        if (r->type == REDIS_REPLY_ARRAY && r->elements == 4 && strcmp(r->element[0]->str, "pmessage") == 0) {
            const char *channel = r->element[2]->str, *data = r->element[3]->str;
            uint64_t id;
            long long uid;
            if (strcmp(data, "soak-end") == 0) {
                s->got_end = true;
            } else if (sscanf(data, "soak:%16" SCNx64 ":%lld:", &id, &uid) == 2) {
                char want[48];
                snprintf(want, sizeof(want), "user:%lld", uid);
                if (strcmp(channel, want) != 0)
                    s->wrong_channel++;
                vec_push(&s->ids, id);
            }
        }
        freeReplyObject(r);
    }
    redisFree(c);
    return NULL;
}

/* ------------------------------------------------------------- the server */

struct server {
    pid_t pid;
    int port, metrics_port;
    char conf[PATH_MAX], log[PATH_MAX];
};

/* Listening, and every shard has its Redis links up. */
static bool server_ready(void *arg)
{
    const struct server *s = arg;
    return tp_port_open(s->port) && http_status(s->metrics_port, "/healthz") == 200;
}

static void server_start(struct server *s, const struct tp_redis *cache, const struct tp_redis *queue)
{
    snprintf(s->conf, sizeof(s->conf), "%s/server.conf", g_dir);
    snprintf(s->log, sizeof(s->log), "%s/server.log", g_dir);
    for (int attempt = 0; attempt < 3; attempt++) {
        s->port = free_port();
        s->metrics_port = free_port();
        FILE *f = fopen(s->conf, "w");
        if (f == NULL)
            die("fopen %s: %s", s->conf, strerror(errno));
        fprintf(f,
                "[presence_service]\nhost = 127.0.0.1\nport = %d\nthread_count = %d\nlog_level = info\n\n"
                "[route]\nroute_ttl = 3600\nstatus_ttl = 3600\nmax_retries = %d\nretry_interval = %d\n\n"
                "[redis_cache]\nhost = 127.0.0.1\nport = %d\ndatabase = 0\ntimeout = %d\n\n"
                "[redis_queue]\nhost = 127.0.0.1\nport = %d\ndatabase = 1\ntimeout = %d\n\n"
                "[metrics]\nhost = 127.0.0.1\nport = %d\n",
                s->port, SHARDS, MAX_RETRIES, RETRY_MS, cache->port, REDIS_TIMEOUT_MS, queue->port,
                REDIS_TIMEOUT_MS, s->metrics_port);
        fclose(f);
        const char *bin = getenv("PRESENCE_SERVER_BIN");
        if (bin == NULL || *bin == '\0')
            bin = PRESENCE_SERVER_BIN;
        const char *argv[] = {bin, "-c", s->conf, NULL};
        s->pid = tp_spawn(argv, s->log, NULL);
        if (s->pid < 0)
            die("%s", tp_error());
        if (tp_wait_ready(&s->pid, server_ready, s, 10000, 20) == 0)
            return;
        if (s->pid != 0)
            tp_stop(s->pid, SIGTERM, 5000);
        s->pid = 0;
    }
    tp_print_tail(s->log, 30);
    die("im-presence did not start");
}

/* Probe Queries the server answered, and those that failed in transport (maybe counted). */
static atomic_int g_probes, g_probes_lost;

/* One Query on a fresh connection: its code, or -1 on a transport error. */
static int probe(int port, int64_t uid)
{
    const char *err = NULL;
    struct pc_client *c = pc_connect("127.0.0.1", port, CLIENT_TIMEOUT_MS, &err);
    if (c == NULL)
        return -1;
    Mpim__QueryRouteResp *r = NULL;
    int code = pc_query(c, uid, &r) == 0 && r->result != NULL ? (int)r->result->code : -1;
    atomic_fetch_add(code >= 0 ? &g_probes : &g_probes_lost, 1);
    if (r != NULL)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    pc_close(c);
    return code;
}

/* Query until the answer is not UNAVAILABLE: ms it took, or -1 after timeout_ms. */
static double wait_served(int port, double timeout_ms)
{
    double t0 = tp_mono_ms();
    while (tp_mono_ms() - t0 < timeout_ms) {
        int code = probe(port, 1);
        if (code == MPIM__CODE__OK || code == MPIM__CODE__NOT_FOUND)
            return tp_mono_ms() - t0;
        tp_sleep_ms(20);
    }
    return -1;
}

/* Sum of the server's impresence_requests_total over every series, from the Stats RPC. */
static double server_requests_total(int port)
{
    const char *err = NULL;
    struct pc_client *c = pc_connect("127.0.0.1", port, CLIENT_TIMEOUT_MS, &err);
    if (c == NULL)
        return -1;
    Mpim__StatsReq req = MPIM__STATS_REQ__INIT;
    ProtobufCMessage *m = NULL;
    double total = -1;
    if (pc_call(c, PR_METHOD_STATS, &req.base, &m) == 0) {
        Mpim__StatsResp *r = (Mpim__StatsResp *)m;
        total = 0;
        for (size_t i = 0; i < r->n_stats; i++)
            if (strncmp(r->stats[i]->name, "impresence_requests_total{", 26) == 0)
                total += r->stats[i]->value;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    pc_close(c);
    return total;
}

/* ---------------------------------------------------------------------- main */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile(const uint64_t *bins, uint64_t total, double p)
{
    uint64_t want = (uint64_t)((double)total * p), seen = 0;
    for (long b = 0; b < LAT_BINS; b++) {
        seen += bins[b];
        if (seen > want)
            return (double)(b + 1) * LAT_BIN_US / 1000.0;
    }
    return (double)LAT_BINS * LAT_BIN_US / 1000.0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: soak [--seconds N] [--rss-growth MIB]   (defaults 75 s, %d MiB)\n",
            RSS_GROWTH_DEFAULT_MIB);
}

/* A whole number in [min, max] from argv, or exit 2. */
static long long number_arg(const char *flag, const char *value, long long min, long long max)
{
    char *end;
    long long v = strtoll(value, &end, 10);
    if (end == value || *end != '\0' || v < min || v > max) {
        fprintf(stderr, "soak: %s takes %lld to %lld\n", flag, min, max);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    int seconds = 75;
    long long rss_growth_mib = RSS_GROWTH_DEFAULT_MIB;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            seconds = (int)number_arg(argv[i], argv[i + 1], 10, 86400);
            i++;
        } else if (strcmp(argv[i], "--rss-growth") == 0 && i + 1 < argc) {
            rss_growth_mib = number_arg(argv[i], argv[i + 1], 0, 1 << 20);
            i++;
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_fatal_signal);
    signal(SIGTERM, on_fatal_signal);
    signal(SIGHUP, on_fatal_signal);
    atexit(kill_all);
    snprintf(g_dir, sizeof(g_dir), "/tmp/im-presence-soak.XXXXXX");
    if (mkdtemp(g_dir) == NULL)
        die("mkdtemp: %s", strerror(errno));

    struct tp_redis cache, queue;
    redis_init(&cache, "cache");
    redis_init(&queue, "queue");
    struct server srv;
    server_start(&srv, &cache, &queue);
    printf("soak: %d s, %d connections x %d users, batches of %d, thread_count %d, Redis timeout %d ms; dir "
           "%s\n",
           seconds, NCONN, USERS, BATCH, SHARDS, REDIS_TIMEOUT_MS, g_dir);
    tp_sleep_ms(500);
    long long rss_before = rss_bytes(srv.pid);

    struct subscriber sub = {.port = queue.port};
    if (pthread_create(&sub.thread, NULL, subscriber_main, &sub) != 0)
        die("pthread_create");
    /* Subscribed before the first Deliver. */
    double sub_deadline = tp_mono_ms() + 10000;
    while (!atomic_load(&sub.ready) && tp_mono_ms() < sub_deadline)
        tp_sleep_ms(5);
    if (!atomic_load(&sub.ready) || sub.failed)
        die("subscriber not ready: %s", sub.why);

    static struct worker workers[NCONN];
    for (int i = 0; i < NCONN; i++) {
        struct worker *w = &workers[i];
        w->index = i;
        w->port = srv.port;
        w->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        w->lat = calloc(LAT_BINS, sizeof(*w->lat));
        if (w->lat == NULL)
            die("out of memory");
        for (int u = 0; u < USERS; u++)
            w->users[u].state = U_NONE;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            die("pthread_create");
    }

    /* The faults, from this thread. */
    double t_start = tp_mono_ms();
    tp_sleep_ms(t_start + seconds * 1000.0 * 0.35 - tp_mono_ms());
    int f = fault_begin();
    double cache_at = (tp_mono_ms() - t_start) / 1000.0;
    atomic_fetch_add(&g_cache_gen, 1);
    tp_redis_stop(&cache, 5000);
    tp_sleep_ms(CACHE_DOWN_MS);
    redis_start(&cache, false);
    double cache_recovery = wait_served(srv.port, 10000);
    fault_end(f);
    printf(
        "soak: cache Redis stopped at %.1f s for %d ms and restarted empty; served again %.0f ms after the "
        "restart\n",
        cache_at, CACHE_DOWN_MS, cache_recovery);

    tp_sleep_ms(t_start + seconds * 1000.0 * 0.65 - tp_mono_ms());
    f = fault_begin();
    double queue_at = (tp_mono_ms() - t_start) / 1000.0;
    if (tp_redis_pause(&queue) != 0)
        die("the queue Redis did not stop");
    tp_sleep_ms(QUEUE_PAUSE_MS);
    tp_redis_resume(&queue);
    fault_end(f);
    printf("soak: queue Redis paused at %.1f s for %d ms\n", queue_at, QUEUE_PAUSE_MS);

    tp_sleep_ms(t_start + seconds * 1000.0 - tp_mono_ms());
    atomic_store(&g_stop, true);
    for (int i = 0; i < NCONN; i++)
        pthread_join(workers[i].thread, NULL);
    double elapsed = (tp_mono_ms() - t_start) / 1000.0;

    /* Everything published before now reaches the subscriber before this marker. */
    redisContext *rc = redisConnect("127.0.0.1", queue.port);
    if (rc == NULL || rc->err)
        die("connect to the queue Redis: %s", rc ? rc->errstr : "oom");
    freeReplyObject(redisCommand(rc, "PUBLISH user:0 soak-end"));
    redisFree(rc);
    atomic_store(&sub.deadline, tp_mono_ms() + 10000);
    pthread_join(sub.thread, NULL);

    /* ----- checks ----- */
    int failures = 0;
#define CHECK(cond, ...)                                                                                     \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            failures++;                                                                                      \
            printf("soak: FAIL: " __VA_ARGS__);                                                              \
            printf("\n");                                                                                    \
        }                                                                                                    \
    } while (0)

    uint64_t sent = 0, answered = 0, by_code[PR_CODE_COUNT] = {0}, by_method[PR_METHOD_COUNT] = {0};
    uint64_t strict = 0, delivered = 0, unavailable_delivers = 0;
    static uint64_t lat[LAT_BINS];
    double lat_max = 0;
    for (int i = 0; i < NCONN; i++) {
        struct worker *w = &workers[i];
        CHECK(!w->failed, "connection %d: %s", i, w->why);
        CHECK(w->sent == w->answered, "connection %d: %" PRIu64 " requests sent, %" PRIu64 " answered", i,
              w->sent, w->answered);
        sent += w->sent;
        answered += w->answered;
        for (int k = 0; k < PR_CODE_COUNT; k++)
            by_code[k] += w->by_code[k];
        for (int k = 0; k < PR_METHOD_COUNT; k++)
            by_method[k] += w->by_method[k];
        strict += w->strict_checks;
        delivered += w->delivered.n;
        unavailable_delivers += w->unavailable_delivers;
        for (long b = 0; b < LAT_BINS; b++)
            lat[b] += w->lat[b];
        if (w->lat_max > lat_max)
            lat_max = w->lat_max;
    }

    /* Deliveries: each delivered=true id reached the subscriber exactly once. */
    CHECK(!sub.failed, "%s", sub.why);
    CHECK(sub.got_end, "the subscriber never saw the end marker");
    CHECK(sub.wrong_channel == 0, "%" PRIu64 " messages arrived on another user's channel",
          sub.wrong_channel);
    qsort(sub.ids.v, sub.ids.n, sizeof(uint64_t), cmp_u64);
    uint64_t duplicates = 0, strangers = 0, missing = 0, published_unavailable = 0;
    for (size_t i = 0; i < sub.ids.n; i++) {
        uint64_t id = sub.ids.v[i];
        if (i > 0 && id == sub.ids.v[i - 1])
            duplicates++;
        uint64_t w = id >> 40, seq = id & ((1ull << 40) - 1);
        if (w >= NCONN || seq >= workers[w].deliver_seq)
            strangers++;
    }
    for (int i = 0; i < NCONN; i++) {
        for (size_t k = 0; k < workers[i].delivered.n; k++)
            if (bsearch(&workers[i].delivered.v[k], sub.ids.v, sub.ids.n, sizeof(uint64_t), cmp_u64) == NULL)
                missing++;
        for (size_t k = 0; k < workers[i].unavailable.n; k++)
            if (bsearch(&workers[i].unavailable.v[k], sub.ids.v, sub.ids.n, sizeof(uint64_t), cmp_u64) !=
                NULL)
                published_unavailable++;
    }
    CHECK(missing == 0,
          "%" PRIu64 " of %" PRIu64 " messages answered delivered=true never reached the subscriber", missing,
          delivered);
    CHECK(duplicates == 0, "%" PRIu64 " messages were published more than once", duplicates);
    CHECK(strangers == 0, "%" PRIu64 " messages the soak never sent", strangers);

    /* The server: alive, serving, counted what it answered. */
    int status;
    bool alive = waitpid(srv.pid, &status, WNOHANG) == 0;
    CHECK(alive, "the server died during the soak");
    double served_ms = alive ? wait_served(srv.port, 5000) : -1;
    CHECK(served_ms >= 0, "the server does not answer a Query after the soak");
    double counted = alive ? server_requests_total(srv.port) : -1;
    /* Plus the probe Queries of wait_served. */
    double probes = atomic_load(&g_probes), lost = atomic_load(&g_probes_lost);
    CHECK(counted >= (double)sent + probes && counted <= (double)sent + probes + lost,
          "the server counted %.0f requests; %" PRIu64 " were sent and %.0f probes answered", counted, sent,
          probes);

    tp_sleep_ms(IDLE_BEFORE_RSS_MS);
    long long rss_after = rss_bytes(srv.pid);
    CHECK(rss_before > 0 && rss_after > 0 && rss_after <= rss_before + (rss_growth_mib << 20),
          "RSS grew from %.1f MiB to %.1f MiB (bound +%lld MiB)", rss_before / 1048576.0,
          rss_after / 1048576.0, rss_growth_mib);

    if (alive) {
        kill(srv.pid, SIGTERM);
        status = tp_wait_pid(srv.pid, 10000);
        CHECK(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the server did not exit 0 within 10 s of SIGTERM (status %d)", status);
        if (status == -1)
            tp_stop(srv.pid, SIGTERM, 5000);
    }
    tp_redis_stop(&cache, 5000);
    tp_redis_stop(&queue, 5000);

    /* ----- figures ----- */
    printf("soak: %" PRIu64 " requests sent, %" PRIu64 " answered in %.1f s (%.0f/s); %" PRIu64
           " answers checked against a certain prediction\n",
           sent, answered, elapsed, (double)answered / elapsed, strict);
    printf("soak: by code:");
    for (int k = 0; k < PR_CODE_COUNT; k++)
        printf(" %s %" PRIu64, pc_code_name(k), by_code[k]);
    printf("\nsoak: by method:");
    for (int k = 0; k < PR_METHOD_STATS; k++)
        printf(" %s %" PRIu64, request_method_name(k), by_method[k]);
    printf(
        "\nsoak: latency, batch sent to answer read: p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.1f ms\n",
        percentile(lat, answered, 0.50), percentile(lat, answered, 0.99), percentile(lat, answered, 0.999),
        lat_max);
    for (int k = 0; k < atomic_load(&g_nfaults); k++) {
        double last = 0;
        for (int i = 0; i < NCONN; i++)
            if (workers[i].last_unavailable[k] > last)
                last = workers[i].last_unavailable[k];
        if (last > 0)
            printf("soak: after the %s, the last UNAVAILABLE was read %.0f ms after %s\n",
                   k == 0 ? "cache restart" : "queue pause", last - atomic_load(&g_faults[k].end),
                   k == 0 ? "the first query was served again" : "SIGCONT");
    }
    printf("soak: deliveries: %" PRIu64 " delivered=true, %" PRIu64 " received by the subscriber, %" PRIu64
           " missing, %" PRIu64 " duplicates; %" PRIu64 " answered UNAVAILABLE (%" PRIu64
           " of them published anyway)\n",
           delivered, (uint64_t)sub.ids.n, missing, duplicates, unavailable_delivers, published_unavailable);
    printf("soak: server counted %.0f requests (%" PRIu64 " sent + %.0f probes)\n", counted, sent, probes);
    printf("soak: server RSS before %.1f MiB, after %.1f MiB idle (%+.1f MiB; bound +%lld MiB)\n",
           rss_before / 1048576.0, rss_after / 1048576.0, (rss_after - rss_before) / 1048576.0,
           rss_growth_mib);
    if (failures > 0) {
        tp_print_tail(srv.log, 30);
        printf("soak: files kept in %s\n", g_dir);
    } else {
        tp_rm_tree(g_dir);
    }
    printf("soak: %d passed, %d failed\n", failures == 0, failures != 0);
    return failures == 0 ? 0 : 1;
}
