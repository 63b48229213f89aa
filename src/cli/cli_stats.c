#include "cli/cli_stats.h"

#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "core/clock.h"
#include "core/cluster_redirect.h"

int cli_stats(struct pc_client *c, const char *where, int all)
{
    Mpim__StatsReq req = MPIM__STATS_REQ__INIT;
    ProtobufCMessage *m = NULL;
    if (pc_call(c, PR_METHOD_STATS, &req.base, &m) < 0) {
        fprintf(stderr, "im-presence-cli: stats request to %s failed: %s\n", where, pc_error(c));
        return 3;
    }
    Mpim__StatsResp *r = (Mpim__StatsResp *)m;
    if (r->result != NULL && r->result->code != MPIM__CODE__OK) {
        printf("%s msg=\"%s\"\n", pc_code_name(r->result->code), r->result->msg);
        protobuf_c_message_free_unpacked(m, NULL);
        return 1;
    }
    size_t width = 6;
    for (size_t i = 0; i < r->n_stats; i++)
        if (strlen(r->stats[i]->name) > width)
            width = strlen(r->stats[i]->name);
    printf("%-*s %s\n", (int)width, "METRIC", "VALUE");
    for (size_t i = 0; i < r->n_stats; i++) {
        const char *name = r->stats[i]->name;
        /* Histogram buckets are for machines; people get count and sum unless they ask. */
        if (!all && strstr(name, "_bucket{") != NULL)
            continue;
        double v = r->stats[i]->value;
        if (v == (double)(long long)v && v < 1e15 && v > -1e15)
            printf("%-*s %lld\n", (int)width, name, (long long)v);
        else
            printf("%-*s %.6g\n", (int)width, name, v);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

static void print_event(const redisReply *msg)
{
    char stamp[32];
    int64_t now = clock_now_ms();
    time_t secs = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(stamp + n, sizeof(stamp) - n, ".%03dZ", (int)(now % 1000));

    const redisReply *channel = msg->element[1], *payload = msg->element[2];
    if (strcmp(channel->str, "presence:route") == 0) {
        /* "<uid>:<gw>", or "<uid>:" for a logout; gateways may hold colons: split at the first. */
        const char *colon = memchr(payload->str, ':', payload->len);
        if (colon == NULL) {
            printf("%s route ? %.*s\n", stamp, (int)payload->len, payload->str);
        } else if (colon + 1 == payload->str + payload->len) {
            printf("%s route user=%.*s offline\n", stamp, (int)(colon - payload->str), payload->str);
        } else {
            printf("%s route user=%.*s gateway=%.*s\n", stamp, (int)(colon - payload->str), payload->str,
                   (int)(payload->str + payload->len - colon - 1), colon + 1);
        }
    } else if (strcmp(channel->str, "presence:kick") == 0) {
        /* "<uid>:<device>:<epoch>:<gw>": uid, device and epoch hold no colon, the gateway may. */
        const char *f[3] = {NULL}, *p = payload->str, *end = payload->str + payload->len;
        for (int i = 0; i < 3 && p != NULL; i++) {
            f[i] = memchr(p, ':', (size_t)(end - p));
            p = f[i] != NULL ? f[i] + 1 : NULL;
        }
        if (f[2] == NULL)
            printf("%s kick ? %.*s\n", stamp, (int)payload->len, payload->str);
        else
            printf("%s kick user=%.*s device=\"%.*s\" epoch=%.*s gateway=%.*s\n", stamp, (int)(f[0] - payload->str),
                   payload->str, (int)(f[1] - f[0] - 1), f[0] + 1, (int)(f[2] - f[1] - 1), f[1] + 1,
                   (int)(end - f[2] - 1), f[2] + 1);
    } else {
        printf("%s message channel=%s bytes=%zu data=\"", stamp, channel->str, (size_t)payload->len);
        for (size_t i = 0; i < payload->len; i++) {
            unsigned char ch = (unsigned char)payload->str[i];
            if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
                putchar(ch);
            else
                printf("\\x%02x", ch);
        }
        printf("\"\n");
    }
    fflush(stdout);
}

static redisContext *watch_connect(const char *host, int port)
{
    struct timeval tv = {5, 0};
    redisContext *rc = redisConnectWithTimeout(host, port, tv);
    if (rc == NULL || rc->err) {
        fprintf(stderr, "im-presence-cli: cannot connect to redis %s:%d: %s\n", host, port,
                rc ? rc->errstr : "out of memory");
        redisFree(rc);
        return NULL;
    }
    return rc;
}

/* SSUBSCRIBE user:<uid> on host:port, following one MOVED to the channel's slot master. The
 * blocking API on purpose: hiredis 0.14's async API asserts on the "smessage" pushes. */
static redisContext *watch_sharded(const char *host, int port, long long uid)
{
    struct cluster_addr at;
    for (int hop = 0; hop < 2; hop++) {
        redisContext *sc = watch_connect(host, port);
        if (sc == NULL)
            return NULL;
        redisReply *r = redisCommand(sc, "SSUBSCRIBE user:%lld", uid);
        struct cluster_redirect rd;
        if (r != NULL && r->type == REDIS_REPLY_ERROR &&
            cluster_error_classify(r->str, r->len, &rd) == CLUSTER_ERR_MOVED && hop == 0) {
            at = rd.to;
            if (at.kind == CLUSTER_HOST_NAMED)
                host = at.host; /* SAME: the node we asked, at this port */
            port = at.port;
            freeReplyObject(r);
            redisFree(sc);
            continue;
        }
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            fprintf(stderr, "im-presence-cli: SSUBSCRIBE user:%lld on %s:%d failed: %s\n", uid, host, port,
                    r != NULL ? r->str : sc->errstr);
            freeReplyObject(r);
            redisFree(sc);
            return NULL;
        }
        freeReplyObject(r);
        printf("watching user:%lld (sharded) on %s:%d\n", uid, host, port);
        return sc;
    }
    fprintf(stderr, "im-presence-cli: SSUBSCRIBE user:%lld: redirected more than once\n", uid);
    return NULL;
}

/* The next reply already read from c, or the one after reading what the socket holds. */
static int next_event(redisContext *c, redisReply **r, bool readable)
{
    if (redisGetReplyFromReader(c, (void **)r) != REDIS_OK)
        return -1;
    if (*r == NULL && readable && (redisBufferRead(c) != REDIS_OK || redisGetReplyFromReader(c, (void **)r) != REDIS_OK))
        return -1;
    return 0;
}

static bool is_event(const redisReply *r)
{
    return r->type == REDIS_REPLY_ARRAY && r->elements == 3 && r->element[0]->type == REDIS_REPLY_STRING &&
           (strcmp(r->element[0]->str, "message") == 0 || strcmp(r->element[0]->str, "smessage") == 0);
}

int cli_watch(const char *host, int port, long long uid, long long count, int sharded)
{
    redisContext *c[2] = {watch_connect(host, port), NULL};
    if (c[0] == NULL)
        return 3;
    redisReply *r = uid > 0 && !sharded ? redisCommand(c[0], "SUBSCRIBE presence:route presence:kick user:%lld", uid)
                                        : redisCommand(c[0], "SUBSCRIBE presence:route presence:kick");
    freeReplyObject(r);
    for (int more = uid > 0 && !sharded ? 2 : 1; more > 0; more--) /* the other subscribe confirmations */
        if (redisGetReply(c[0], (void **)&r) == REDIS_OK)
            freeReplyObject(r);
    if (c[0]->err) {
        fprintf(stderr, "im-presence-cli: subscribe failed: %s\n", c[0]->errstr);
        redisFree(c[0]);
        return 3;
    }
    if (uid > 0 && !sharded)
        printf("watching presence:route, presence:kick and user:%lld on %s:%d\n", uid, host, port);
    else
        printf("watching presence:route and presence:kick on %s:%d\n", host, port);
    if (uid > 0 && sharded && (c[1] = watch_sharded(host, port, uid)) == NULL) {
        redisFree(c[0]);
        return 3;
    }
    fflush(stdout);
    int n = c[1] != NULL ? 2 : 1, status = 0;
    long long seen = 0;
    struct pollfd p[2];
    bool readable[2] = {false, false};
    while (count == 0 || seen < count) {
        bool any = false;
        for (int i = 0; i < n && (count == 0 || seen < count); i++) {
            if (next_event(c[i], &r, readable[i]) < 0) {
                fprintf(stderr, "im-presence-cli: redis connection lost: %s\n", c[i]->errstr);
                status = 3;
                goto out;
            }
            readable[i] = false;
            if (r == NULL)
                continue;
            any = true;
            if (is_event(r)) {
                print_event(r);
                seen++;
            }
            freeReplyObject(r);
        }
        if (any || (count != 0 && seen >= count))
            continue; /* take every reply already read before waiting again */
        for (int i = 0; i < n; i++)
            p[i] = (struct pollfd){.fd = c[i]->fd, .events = POLLIN};
        if (poll(p, (nfds_t)n, -1) < 0)
            continue; /* EINTR */
        for (int i = 0; i < n; i++)
            readable[i] = p[i].revents != 0;
    }
out:
    for (int i = 0; i < n; i++)
        redisFree(c[i]);
    return status;
}
