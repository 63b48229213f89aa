/* Shard thread only: every function runs on the loop of the shard that started the drain, in the
 * inbox drain (DrainGateway), the lease watcher's callbacks (shard 0), or hiredis callbacks. */
#include "shards/drain.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/cluster_slot.h"
#include "core/log.h"
#include "core/request.h"
#include "presence.pb-c.h"
#include "shards/gateways.h"
#include "shards/handlers_common.h"
#include "shards/lease_watch.h"
#include "shards/redis_result.h"
#include "shards/shard.h"

/* A lease drain renews its lock every third of the lock's life: a live drainer never loses it,
 * a crashed one's lapses LEASE_LOCK_MS after its last renewal and another instance takes over. */
#define LOCK_RENEW_S (LEASE_LOCK_MS / 3000.0)

struct drain {
    struct shard *s;
    struct pr_request *req; /* DrainGateway: the call, answered at the end; NULL: a lease drain */
    enum drain_kind kind;
    char gw[GW_ADDR_MAX + 1]; /* the gateway (printable ASCII), NUL-terminated for the logs */
    size_t gw_len;
    char lease_end[24]; /* lease drain: the lapsed end it claimed; "" for DrainGateway */
    bool cluster;       /* cache mode = cluster: one index per slot */
    uint8_t *bitmap;    /* cluster: the gateway's slots (gateway:slots:{gw}); NULL if none */
    size_t bitmap_len;
    int32_t slot;         /* cluster: the slot whose index is being drained; -1 before the first */
    int64_t taken;        /* index members the last step took */
    int64_t removed;      /* sessions ended so far */
    uint64_t started_ns;  /* monotonic: the drain's start */
    uint64_t step_ns;     /* ... the step in flight's send (its WAIT's bound) */
    ev_tstamp renewed;    /* lease drain: when its lock was claimed or last renewed */
    bool busy;            /* the bitmap GET, a step, its WAIT or the finish is out */
    bool over;            /* finished or failed: nothing more is sent */
    uint8_t attempts;     /* runs of the script out (a NOSCRIPT runs it by body, once) */
    uint32_t aside;       /* notices and lock renewals out beside that */
    uint32_t unpublished; /* notices that did not reach the queue Redis */
    int code;             /* Mpim__Code of the drain */
    char msg[PR_MSG_MAX]; /* why, if not OK */
    char *notes;          /* a step's notices until published: "<uid>:<gw>\0..." */
    size_t notes_len, notes_cap;
};

static void step(struct drain *d, bool by_body);
static void finish(struct drain *d, bool by_body);

static const char *kind_name(enum drain_kind k)
{
    return k == DRAIN_MANUAL ? "manual" : "lease";
}

/* --- the end --- */

static void on_quiet(int revents, void *arg)
{
    (void)revents;
    shard_stop_finish(arg);
}

static void done(struct drain *d)
{
    struct shard *s = d->s;
    /* Stopping, the last drain gone: finish from the loop, not inside this Redis callback. */
    if (--s->drains_running == 0 && s->drains_stopping)
        ev_once(s->loop, -1, 0, 0., on_quiet, s);
    double ms = (double)(clock_mono_ns() - d->started_ns) / 1e6;
    if (d->code == MPIM__CODE__OK) {
        counter_add(&s->counters.drains[d->kind], 1);
        log_info("gateway drained gateway=\"%s\" how=%s sessions=%lld ms=%.0f unpublished=%u", d->gw,
                 kind_name(d->kind), (long long)d->removed, ms, d->unpublished);
    } else {
        log_warn("gateway drain failed gateway=\"%s\" how=%s sessions=%lld ms=%.0f error=\"%s\"", d->gw,
                 kind_name(d->kind), (long long)d->removed, ms, d->msg);
    }
    if (d->req != NULL) {
        struct pr_request *req = d->req;
        req->count = d->removed;
        if (d->code == MPIM__CODE__OK && d->unpublished > 0)
            request_set_result(req, MPIM__CODE__OK, "%u route notices not published: queue redis unavailable",
                               d->unpublished);
        else if (d->msg[0] != '\0')
            request_set_result(req, d->code, "%s", d->msg);
        else
            request_set_result(req, d->code, NULL);
        shard_answer(s, req);
    } else {
        lease_watch_drain_done(s);
    }
    free(d->bitmap);
    free(d->notes);
    free(d);
}

/* Done once it is over and nothing of it is out any more (d may be freed). */
static void maybe_done(struct drain *d)
{
    if (d->over && !d->busy && d->aside == 0)
        done(d);
}

/* Stop here with code (the first failure wins); d may be freed. */
static void fail(struct drain *d, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void fail(struct drain *d, int code, const char *fmt, ...)
{
    if (!d->over) {
        d->over = true;
        d->code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
        va_end(ap);
        d->notes_len = 0; /* a step not confirmed publishes nothing */
    }
    maybe_done(d);
}

/* true if the reply is usable; else the drain failed (d may be freed). */
static bool usable(struct drain *d, enum link_status status, const redisReply *reply)
{
    int code = redis_result(status, reply);
    if (code == MPIM__CODE__OK)
        return true;
    if (status == LINK_REPLY)
        fail(d, code, "cache redis: %s (%lld sessions removed)", reply->str, (long long)d->removed);
    else
        fail(d, code, "cache redis unavailable (%lld sessions removed)", (long long)d->removed);
    return false;
}

/* --- notices and the lock, beside the steps --- */

static void on_published(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    (void)link;
    struct drain *d = priv;
    d->aside--;
    if (redis_result(status, reply) != MPIM__CODE__OK)
        d->unpublished++;
    maybe_done(d);
}

/* The step's route notices on presence:route, each as its Unbind would: "<uid>:" for a logout,
 * "<uid>:<gw>" when the route fell back to another session. */
static void publish_notes(struct drain *d)
{
    struct shard *s = d->s;
    bool cluster = s->conf->queue.mode == REDIS_CLUSTER;
    for (size_t off = 0; off < d->notes_len;) {
        const char *note = d->notes + off;
        size_t len = strlen(note);
        off += len + 1;
        /* By the user's slot, like writes.c: a PUBLISH any node takes reaches every node. */
        uint16_t slot =
            cluster ? cluster_crc16(note, (size_t)(strchr(note, ':') - note)) & (CLUSTER_SLOTS - 1) : 0;
        resp_start(&s->resp, 3);
        resp_arg_str(&s->resp, "PUBLISH");
        resp_arg_str(&s->resp, ROUTE_CHANNEL);
        resp_arg(&s->resp, note, len);
        if (!s->resp.failed && router_send(&s->queue, slot, on_published, d, s->resp.buf, s->resp.len) == 0)
            d->aside++;
        else
            d->unpublished++;
    }
    d->notes_len = 0;
}

static bool add_note(struct drain *d, const char *uid, size_t uid_len, const char *gw, size_t gw_len)
{
    size_t need = uid_len + 1 + gw_len + 1;
    if (d->notes_len + need > d->notes_cap) {
        size_t cap = d->notes_cap * 2 + need + 4096;
        char *p = realloc(d->notes, cap);
        if (p == NULL)
            return false;
        d->notes = p;
        d->notes_cap = cap;
    }
    char *at = d->notes + d->notes_len;
    memcpy(at, uid, uid_len);
    at[uid_len] = ':';
    memcpy(at + uid_len + 1, gw, gw_len);
    at[uid_len + 1 + gw_len] = '\0';
    d->notes_len += need;
    return true;
}

static void on_renewed(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    (void)link;
    struct drain *d = priv;
    int64_t kept;
    d->aside--;
    if (status == LINK_REPLY && redis_reply_int(reply, &kept) && kept == 0)
        log_warn(
            "gateway drain lock lost gateway=\"%s\": another instance may drain it too (harmless: a session "
            "ends once)",
            d->gw);
    maybe_done(d);
}

static void renew_lock(struct drain *d)
{
    struct shard *s = d->s;
    if (d->kind != DRAIN_LEASE || ev_now(s->loop) - d->renewed < LOCK_RENEW_S)
        return;
    char key[sizeof(GW_LOCK_PREFIX) + GW_ADDR_MAX], ms[16];
    size_t n = sizeof(GW_LOCK_PREFIX) - 1;
    memcpy(key, GW_LOCK_PREFIX, n);
    memcpy(key + n, d->gw, d->gw_len);
    const char *owner = lease_watch_owner(s);
    const struct gw_arg args[] = {{key, n + d->gw_len},
                                  {owner, strlen(owner)},
                                  {ms, (size_t)snprintf(ms, sizeof(ms), "%d", LEASE_LOCK_MS)}};
    /* By body: once every few seconds, and it never needs a NOSCRIPT round. */
    if (gateways_eval(s, GW_SCRIPT_RENEW, true, gateways_lease_slot(), on_renewed, d, args, 3, 1) == 0) {
        d->aside++;
        d->renewed = ev_now(s->loop);
    }
}

/* --- steps --- */

/* The next key: on a cluster the next slot of the bitmap, else (or past the last) the finish. */
static void next_key(struct drain *d)
{
    for (int32_t slot = d->slot + 1;
         d->cluster && slot < (int32_t)CLUSTER_SLOTS && (size_t)slot / 8 < d->bitmap_len; slot++) {
        if (d->bitmap[slot / 8] & (0x80u >> (slot % 8))) { /* SETBIT's offset 0 is the top bit */
            d->slot = slot;
            step(d, false);
            return;
        }
    }
    finish(d, false);
}

static void go_on(struct drain *d)
{
    publish_notes(d);
    if (d->taken >= DRAIN_STEP)
        step(d, false); /* the key may hold more */
    else
        next_key(d);
}

static void on_waited(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    (void)link;
    struct drain *d = priv;
    int want = d->s->conf->cache.wait_replicas;
    long long got = status == LINK_REPLY && reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
    d->busy = false;
    if (got < want) {
        fail(d, MPIM__CODE__UNAVAILABLE,
             "%lld sessions removed on the master, but confirmed by %lld of %d replicas within the timeout",
             (long long)d->removed, got, want);
        return;
    }
    go_on(d);
}

/* WAIT for the step's writes on the connection that ran it (writes.c's rule and bound). */
static void send_wait(struct drain *d, struct redis_link *link)
{
    struct shard *s = d->s;
    int64_t left = s->conf->cache.timeout_ms - (int64_t)((clock_mono_ns() - d->step_ns) / 1000000u);
    int64_t wait_ms = left * 3 / 4 - 100;
    resp_start(&s->resp, 3);
    resp_arg_str(&s->resp, "WAIT");
    resp_arg_id(&s->resp, "", s->conf->cache.wait_replicas, "", NULL, 0);
    resp_arg_id(&s->resp, "", wait_ms > 1 ? wait_ms : 1, "", NULL, 0);
    d->busy = true;
    if (s->resp.failed || link_send(link, on_waited, d, s->resp.buf, s->resp.len) < 0) {
        d->busy = false;
        fail(d, MPIM__CODE__UNAVAILABLE, "%lld sessions removed on the master, but their WAIT was not sent",
             (long long)d->removed);
    }
}

/* The step's {members taken, {uid, what, gateway, ...}}: count, keep the notices, go on. */
static void on_step(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct drain *d = priv;
    struct shard *s = d->s;
    d->busy = false;
    if (redis_noscript(status, reply) && d->attempts == 1) {
        step(d, true);
        return;
    }
    d->attempts = 0;
    if (!usable(d, status, reply))
        return;
    const redisReply *out =
        reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 ? reply->element[1] : NULL;
    if (out == NULL || !redis_reply_int(reply->element[0], &d->taken) || out->type != REDIS_REPLY_ARRAY ||
        out->elements % 3 != 0) {
        fail(d, MPIM__CODE__INTERNAL, "unexpected reply from the cache redis drain script");
        return;
    }
    size_t ended = out->elements / 3;
    for (size_t i = 0; i < ended; i++) {
        redisReply *const *e = &out->element[3 * i];
        int64_t what;
        if (e[0]->type != REDIS_REPLY_STRING || !redis_reply_int(e[1], &what) ||
            e[2]->type != REDIS_REPLY_STRING) {
            fail(d, MPIM__CODE__INTERNAL, "unexpected reply from the cache redis drain script");
            return;
        }
        bool ok = true;
        if (what == 1)
            ok = add_note(d, e[0]->str, e[0]->len, "", 0);
        else if (what == 2)
            ok = add_note(d, e[0]->str, e[0]->len, e[2]->str, e[2]->len);
        if (!ok)
            d->unpublished++;
    }
    d->removed += (int64_t)ended;
    counter_add(&s->counters.drained_sessions, ended);
    if (ended > 0 && s->conf->cache.wait_replicas > 0)
        send_wait(d, link);
    else
        go_on(d);
}

/* One EVALSHA of the drain script on the current index key. */
static void step(struct drain *d, bool by_body)
{
    struct shard *s = d->s;
    if (s->drains_stopping) {
        fail(d, MPIM__CODE__UNAVAILABLE, "server shutting down (%lld sessions removed)",
             (long long)d->removed);
        return;
    }
    uint16_t slot = d->cluster ? (uint16_t)d->slot : 0;
    char prefix[64], key[64 + GW_ADDR_MAX], count[16], ttl[16];
    size_t pn = gateways_index_prefix(s, slot, prefix, sizeof(prefix));
    memcpy(key, prefix, pn);
    memcpy(key + pn, d->gw, d->gw_len);
    const struct gw_arg args[] = {
        {key, pn + d->gw_len},
        {d->gw, d->gw_len},
        {count, (size_t)snprintf(count, sizeof(count), "%d", DRAIN_STEP)},
        {ttl, (size_t)snprintf(ttl, sizeof(ttl), "%d", s->conf->route_ttl)},
        {d->cluster ? "1" : "0", 1},
        {prefix, pn},
    };
    renew_lock(d);
    d->attempts++;
    d->busy = true;
    d->step_ns = clock_mono_ns();
    if (gateways_eval(s, GW_SCRIPT_DRAIN, by_body, slot, on_step, d, args, 6, 1) < 0) {
        d->busy = false;
        fail(d, MPIM__CODE__UNAVAILABLE, "cache redis unavailable (%lld sessions removed)",
             (long long)d->removed);
    }
}

/* --- the finish: the lease and the lock --- */

static void on_finished(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    (void)link;
    struct drain *d = priv;
    d->busy = false;
    if (redis_noscript(status, reply) && d->attempts == 1) {
        finish(d, true);
        return;
    }
    d->attempts = 0;
    if (!usable(d, status, reply))
        return;
    d->over = true;
    maybe_done(d);
}

static void finish(struct drain *d, bool by_body)
{
    struct shard *s = d->s;
    char lock[sizeof(GW_LOCK_PREFIX) + GW_ADDR_MAX];
    size_t n = sizeof(GW_LOCK_PREFIX) - 1;
    memcpy(lock, GW_LOCK_PREFIX, n);
    memcpy(lock + n, d->gw, d->gw_len);
    const char *owner = d->kind == DRAIN_LEASE ? lease_watch_owner(s) : "";
    const struct gw_arg args[] = {
        {GW_LEASES_KEY, sizeof(GW_LEASES_KEY) - 1}, {lock, n + d->gw_len},  {d->gw, d->gw_len},
        {d->lease_end, strlen(d->lease_end)},       {owner, strlen(owner)},
    };
    d->attempts++;
    d->busy = true;
    if (gateways_eval(s, GW_SCRIPT_FINISH, by_body, gateways_lease_slot(), on_finished, d, args, 5, 2) < 0) {
        d->busy = false;
        fail(d, MPIM__CODE__UNAVAILABLE,
             "%lld sessions removed, but the lease not ended: cache redis unavailable",
             (long long)d->removed);
    }
}

/* --- the start --- */

/* Cluster: which slots hold an index of the gateway. */
static void on_slots(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    (void)link;
    struct drain *d = priv;
    d->busy = false;
    if (!usable(d, status, reply))
        return;
    if (reply->type == REDIS_REPLY_STRING && reply->len > 0) {
        d->bitmap = malloc(reply->len);
        if (d->bitmap == NULL) {
            fail(d, MPIM__CODE__INTERNAL, "out of memory");
            return;
        }
        memcpy(d->bitmap, reply->str, reply->len);
        d->bitmap_len = reply->len;
    } else if (reply->type != REDIS_REPLY_NIL && reply->type != REDIS_REPLY_STRING) {
        fail(d, MPIM__CODE__INTERNAL, "unexpected reply to GET of the gateway's slot bitmap");
        return;
    }
    next_key(d);
}

static void get_slots(struct drain *d)
{
    struct shard *s = d->s;
    char key[sizeof(GW_SLOTS_PREFIX) + GW_ADDR_MAX + 1];
    size_t n = sizeof(GW_SLOTS_PREFIX) - 1;
    memcpy(key, GW_SLOTS_PREFIX, n);
    memcpy(key + n, d->gw, d->gw_len);
    n += d->gw_len;
    key[n++] = '}';
    resp_start(&s->resp, 2);
    resp_arg_str(&s->resp, "GET");
    resp_arg(&s->resp, key, n);
    d->busy = true;
    if (s->resp.failed ||
        router_send(&s->cache, cluster_keyslot(key, n), on_slots, d, s->resp.buf, s->resp.len) < 0) {
        d->busy = false;
        fail(d, MPIM__CODE__UNAVAILABLE, "cache redis unavailable");
    }
}

bool drain_quiesce(struct shard *s)
{
    s->drains_stopping = true;
    return s->drains_running > 0;
}

void drain_start(struct shard *s, struct pr_request *req, const void *gw, size_t gw_len,
                 const char *lease_end)
{
    struct drain *d = gw_len <= GW_ADDR_MAX && !s->drains_stopping ? calloc(1, sizeof(*d)) : NULL;
    if (d == NULL) {
        if (req != NULL) {
            request_set_result(req, s->drains_stopping ? MPIM__CODE__UNAVAILABLE : MPIM__CODE__INTERNAL, "%s",
                               s->drains_stopping ? "server shutting down" : "out of memory");
            shard_answer(s, req);
        } else {
            lease_watch_drain_done(s);
        }
        return;
    }
    s->drains_running++;
    d->s = s;
    d->req = req;
    d->kind = req != NULL ? DRAIN_MANUAL : DRAIN_LEASE;
    memcpy(d->gw, gw, gw_len);
    d->gw_len = gw_len;
    snprintf(d->lease_end, sizeof(d->lease_end), "%s", lease_end != NULL ? lease_end : "");
    d->cluster = s->conf->cache.mode == REDIS_CLUSTER;
    d->slot = d->cluster ? -1 : 0;
    d->started_ns = clock_mono_ns();
    d->renewed = ev_now(s->loop);
    d->code = MPIM__CODE__OK;
    if (d->cluster)
        get_slots(d);
    else
        step(d, false);
}
