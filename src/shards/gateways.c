/* Shard thread only: every function runs on the owning shard's loop, in the inbox drain or in
 * hiredis callbacks (shards/gateways.h). */
#include "shards/gateways.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cluster_slot.h"
#include "core/request.h"
#include "core/slot_tag.h"
#include "presence.pb-c.h"
#include "shards/drain.h"
#include "shards/handlers_common.h"
#include "shards/redis_result.h"
#include "shards/shard.h"

uint16_t gateways_lease_slot(void)
{
    static const char tag[] = "gateway-leases";
    return cluster_crc16(tag, sizeof(tag) - 1) & (CLUSTER_SLOTS - 1);
}

size_t gateways_index_prefix(const struct shard *s, uint16_t slot, char *buf, size_t size)
{
    int n;
    if (s->conf->cache.mode == REDIS_CLUSTER) {
        char tag[SLOT_TAG_BUF];
        slot_tag_text(slot, tag);
        n = snprintf(buf, size, GW_INDEX_PREFIX "{%s}:", tag);
    } else {
        n = snprintf(buf, size, GW_INDEX_PREFIX);
    }
    return n > 0 && (size_t)n < size ? (size_t)n : 0;
}

void gateways_arg_index(struct shard *s, const struct pr_request *req)
{
    char prefix[64];
    size_t n = gateways_index_prefix(s, req->slot, prefix, sizeof(prefix));
    resp_arg(&s->resp, prefix, n);
    resp_arg_id(&s->resp, "", (long long)req->user_id, "", NULL, 0);
}

int gateways_eval(struct shard *s, int script, bool by_body, uint16_t slot, link_reply_fn *fn, void *priv,
                  const struct gw_arg *args, int nargs, int nkeys)
{
    resp_start_script(s, &s->gw_scripts[script], by_body, nkeys, nargs);
    for (int i = 0; i < nargs; i++)
        resp_arg(&s->resp, args[i].p, args[i].len);
    if (s->resp.failed)
        return -1;
    return router_send(&s->cache, slot, fn, priv, s->resp.buf, s->resp.len);
}

/* --- GatewayHeartbeat: one script on the lease slot --- */

static void send_lease(struct shard *s, struct pr_request *req, bool by_body);

static void on_lease(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    struct shard *s = shard_of(link);
    if (redis_noscript(status, reply) && req->attempts == 1) {
        send_lease(s, req, true);
        return;
    }
    if (take_result(req, "cache", status, reply)) {
        if (redis_reply_int(reply, &req->count))
            request_set_result(req, MPIM__CODE__OK, NULL);
        else
            request_set_result(req, MPIM__CODE__INTERNAL,
                               "unexpected reply from the cache redis lease script");
    }
    shard_answer(s, req);
}

static void send_lease(struct shard *s, struct pr_request *req, bool by_body)
{
    char ms[16];
    int n = snprintf(ms, sizeof(ms), "%d", (int)req->lease_ms);
    const struct gw_arg args[] = {
        {GW_LEASES_KEY, sizeof(GW_LEASES_KEY) - 1}, {req->gateway.data, req->gateway.len}, {ms, (size_t)n}};
    req->attempts++;
    if (gateways_eval(s, GW_SCRIPT_LEASE, by_body, gateways_lease_slot(), on_lease, req, args, 3, 1) < 0)
        answer_not_sent(s, req, "cache");
}

void gateways_dispatch(struct shard *s, struct pr_request *req)
{
    if (req->method == PR_METHOD_DRAIN_GATEWAY)
        drain_start(s, req, req->gateway.data, req->gateway.len, NULL);
    else
        send_lease(s, req, false);
}

/* --- Bind on a cluster: the gateway's slot bit --- */

/* The (gateway, slot) bits this shard saw set: one entry per gateway, forgotten MARKS_TTL after it
 * was started (a bitmap deleted by hand is set again within that) and all at once when MARKS_MAX
 * gateways are known (a table that cannot grow without bound). */
#define MARKS_BUCKETS 256
#define MARKS_MAX 1024
#define MARKS_TTL 60.0

struct gw_mark {
    struct gw_mark *next; /* hash chain */
    ev_tstamp since;      /* when its bits started being collected */
    uint8_t bits[CLUSTER_SLOTS / 8];
    size_t len;
    char gw[];
};

struct gw_marks {
    struct gw_mark *bucket[MARKS_BUCKETS];
    uint32_t n;
};

static void marks_clear(struct gw_marks *m)
{
    for (int b = 0; b < MARKS_BUCKETS; b++) {
        while (m->bucket[b] != NULL) {
            struct gw_mark *e = m->bucket[b];
            m->bucket[b] = e->next;
            free(e);
        }
    }
    m->n = 0;
}

/* gw's entry (made if create), its bits forgotten if stale; NULL: none, or out of memory. */
static struct gw_mark *marks_find(struct shard *s, const uint8_t *gw, size_t len, bool create)
{
    if (s->gw_marks == NULL && (!create || (s->gw_marks = calloc(1, sizeof(*s->gw_marks))) == NULL))
        return NULL;
    struct gw_marks *m = s->gw_marks;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ gw[i]) * 16777619u;
    struct gw_mark **at = &m->bucket[h % MARKS_BUCKETS], *e = *at;
    while (e != NULL && (e->len != len || memcmp(e->gw, gw, len) != 0))
        e = e->next;
    ev_tstamp now = ev_now(s->loop);
    if (e != NULL && now - e->since > MARKS_TTL) {
        memset(e->bits, 0, sizeof(e->bits));
        e->since = now;
    }
    if (e != NULL || !create)
        return e;
    if (m->n >= MARKS_MAX)
        marks_clear(m);
    e = calloc(1, sizeof(*e) + len);
    if (e == NULL)
        return NULL;
    memcpy(e->gw, gw, len);
    e->len = len;
    e->since = now;
    e->next = *at;
    *at = e;
    m->n++;
    return e;
}

static bool marks_has(struct shard *s, const struct pr_request *req)
{
    const struct gw_mark *e = marks_find(s, req->gateway.data, req->gateway.len, false);
    return e != NULL && (e->bits[req->slot / 8] & (1u << (req->slot % 8)));
}

static void marks_set(struct shard *s, const struct pr_request *req)
{
    struct gw_mark *e = marks_find(s, req->gateway.data, req->gateway.len, true);
    if (e != NULL)
        e->bits[req->slot / 8] |= (uint8_t)(1u << (req->slot % 8));
}

void gateways_destroy(struct shard *s)
{
    if (s->gw_marks != NULL)
        marks_clear(s->gw_marks);
    free(s->gw_marks);
    s->gw_marks = NULL;
}

/* A Bind's or Heartbeat's answer waits for its script and the commands beside it (the slot bit,
 * or the index fallback): `pending` counts their replies still out; `script_link` is set once the
 * script is answered (to the request itself when it had no link: it was never sent). The last of
 * them goes on. */
static void slot_bit_join(struct shard *s, struct pr_request *req)
{
    if (--req->pending > 0 || req->script_link == NULL)
        return;
    struct redis_link *link = req->script_link == (void *)req ? NULL : req->script_link;
    req->script_link = NULL;
    writes_done(s, req, link);
}

static void side_failed(struct pr_request *req, int code, const char *what, const char *why)
{
    if (req->code == MPIM__CODE__OK) /* the script's own failure, if any, says more */
        request_set_result(req, code, "session written, but %s was not: %s", what, why);
}

static void on_slot_bit(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    struct shard *s = shard_of(link);
    int code = redis_result(status, reply);
    if (code != MPIM__CODE__OK)
        side_failed(req, code, "its gateway's slot bit",
                    status == LINK_REPLY ? reply->str : "cache redis unavailable");
    else
        marks_set(s, req);
    slot_bit_join(s, req);
}

void gateways_mark_slot(struct shard *s, struct pr_request *req)
{
    const struct presence_conf *c = s->conf;
    if (c->cache.mode != REDIS_CLUSTER || marks_has(s, req))
        return;
    char key[sizeof(GW_SLOTS_PREFIX) + GW_ADDR_MAX + 1];
    size_t n = sizeof(GW_SLOTS_PREFIX) - 1;
    memcpy(key, GW_SLOTS_PREFIX, n);
    memcpy(key + n, req->gateway.data, req->gateway.len);
    n += req->gateway.len;
    key[n++] = '}';
    uint16_t slot = cluster_keyslot(key, n);
    resp_start(&s->resp, 4);
    resp_arg_str(&s->resp, "SETBIT");
    resp_arg(&s->resp, key, n);
    resp_arg_id(&s->resp, "", req->slot, "", NULL, 0);
    resp_arg_str(&s->resp, "1");
    if (s->resp.failed || router_send(&s->cache, slot, on_slot_bit, req, s->resp.buf, s->resp.len) < 0)
        side_failed(req, MPIM__CODE__UNAVAILABLE, "its gateway's slot bit", "not sent");
    else
        req->pending++;
}

/* --- the index, when the script could not write it --- */

static void on_indexed(struct redis_link *link, enum link_status status, redisReply *reply, void *priv)
{
    struct pr_request *req = priv;
    int code = redis_result(status, reply);
    if (code != MPIM__CODE__OK)
        side_failed(req, code, "its gateway's session index",
                    status == LINK_REPLY ? reply->str : "cache redis unavailable");
    slot_bit_join(shard_of(link), req);
}

void gateways_index_fallback(struct shard *s, struct pr_request *req, const redisReply *reply)
{
    size_t unindexed = req->method == PR_METHOD_BIND ? 3 : 4;
    if ((req->method != PR_METHOD_BIND && req->method != PR_METHOD_HEARTBEAT) || reply->elements != unindexed)
        return;
    char key[64 + GW_ADDR_MAX];
    size_t n = gateways_index_prefix(s, req->slot, key, 64);
    memcpy(key + n, req->gateway.data, req->gateway.len);
    n += req->gateway.len;
    /* Both by the user's slot: on the node the slot leaves they get ASK, the router follows it. */
    resp_start(&s->resp, 3);
    resp_arg_str(&s->resp, "SADD");
    resp_arg(&s->resp, key, n);
    resp_arg_id(&s->resp, "", (long long)req->user_id, ":", req->device.data, req->device.len);
    if (s->resp.failed || router_send(&s->cache, req->slot, on_indexed, req, s->resp.buf, s->resp.len) < 0) {
        side_failed(req, MPIM__CODE__UNAVAILABLE, "its gateway's session index", "not sent");
        return;
    }
    req->pending++;
    resp_start(&s->resp, 3);
    resp_arg_str(&s->resp, "PEXPIRE");
    resp_arg(&s->resp, key, n);
    resp_arg_id(&s->resp, "", (long long)s->conf->route_ttl * 1000, "", NULL, 0);
    if (s->resp.failed || router_send(&s->cache, req->slot, on_indexed, req, s->resp.buf, s->resp.len) < 0)
        side_failed(req, MPIM__CODE__UNAVAILABLE, "its gateway's session index", "its TTL not sent");
    else
        req->pending++;
}

bool gateways_mark_pending(struct pr_request *req, struct redis_link *link)
{
    if (req->pending == 0)
        return false;
    req->script_link = link != NULL ? (void *)link : (void *)req;
    return true;
}
