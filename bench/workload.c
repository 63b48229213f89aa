#include "workload.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/frame.h"
#include "core/pb_arena.h"
#include "presence.pb-c.h"

/* --- zipf by rejection-inversion ------------------------------------------------------
 * O(1) per sample and no table, so any n works (the Apache Commons RNG formulation). */

/* log1p(x) / x, accurate near 0. */
static double helper1(double x)
{
    return fabs(x) > 1e-8 ? log1p(x) / x : 1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x));
}

/* expm1(x) / x, accurate near 0. */
static double helper2(double x)
{
    return fabs(x) > 1e-8 ? expm1(x) / x : 1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x));
}

/* H(x) = integral of h: (x^(1-s) - 1) / (1-s), or log(x) when s = 1. */
static double zipf_H(double s, double x)
{
    double lx = log(x);
    return helper2((1.0 - s) * lx) * lx;
}

static double zipf_h(double s, double x)
{
    return exp(-s * log(x));
}

static double zipf_H_inv(double s, double x)
{
    double t = x * (1.0 - s);
    if (t < -1.0)
        t = -1.0; /* numerical safety */
    return exp(helper1(t) * x);
}

int keydist_init(struct keydist *d, const char *spec, uint64_t n, char *err, size_t errlen)
{
    memset(d, 0, sizeof(*d));
    d->n = n;
    if (n == 0) {
        snprintf(err, errlen, "the number of users must be at least 1");
        return -1;
    }
    if (strcmp(spec, "uniform") == 0) {
        d->kind = KEYDIST_UNIFORM;
        return 0;
    }
    if (strncmp(spec, "zipf", 4) != 0 || (spec[4] != '\0' && spec[4] != ':')) {
        snprintf(err, errlen, "--dist '%s': expected uniform, zipf or zipf:S", spec);
        return -1;
    }
    d->kind = KEYDIST_ZIPF;
    d->s = 0.99;
    if (spec[4] == ':') {
        char *end;
        d->s = strtod(spec + 5, &end);
        if (end == spec + 5 || *end != '\0' || !(d->s > 0.0) || d->s > 100.0) {
            snprintf(err, errlen, "--dist '%s': the exponent must be a number in (0, 100]", spec);
            return -1;
        }
    }
    d->h_x1 = zipf_H(d->s, 1.5) - 1.0;
    d->h_n = zipf_H(d->s, (double)n + 0.5);
    d->squeeze = 2.0 - zipf_H_inv(d->s, zipf_H(d->s, 2.5) - zipf_h(d->s, 2.0));
    return 0;
}

int64_t keydist_next(const struct keydist *d, uint64_t *rng)
{
    if (d->kind == KEYDIST_UNIFORM) /* multiply-shift: no division, bias < n / 2^64 */
        return (int64_t)(((unsigned __int128)rng_next(rng) * d->n) >> 64) + 1;
    for (;;) {
        double u = d->h_n + rng_double(rng) * (d->h_x1 - d->h_n);
        double x = zipf_H_inv(d->s, u);
        double kd = floor(x + 0.5);
        if (kd < 1.0)
            kd = 1.0;
        else if (kd > (double)d->n)
            kd = (double)d->n;
        if (kd - x <= d->squeeze || u >= zipf_H(d->s, kd + 0.5) - zipf_h(d->s, kd))
            return (int64_t)kd;
    }
}

const char *keydist_name(const struct keydist *d, char *buf, size_t len)
{
    if (d->kind == KEYDIST_UNIFORM)
        snprintf(buf, len, "uniform");
    else
        snprintf(buf, len, "zipf:%g", d->s);
    return buf;
}

/* --- methods -------------------------------------------------------------------------- */

static const char *const short_names[BENCH_METHODS] = {
    [PR_METHOD_BIND] = "bind",     [PR_METHOD_QUERY] = "query",         [PR_METHOD_DELIVER] = "deliver",
    [PR_METHOD_UNBIND] = "unbind", [PR_METHOD_HEARTBEAT] = "heartbeat",
};

const char *method_short_name(int method)
{
    return method >= 0 && method < BENCH_METHODS ? short_names[method] : "?";
}

static int method_by_name(const char *name, size_t len)
{
    for (int m = 0; m < BENCH_METHODS; m++)
        if (strlen(short_names[m]) == len && strncmp(short_names[m], name, len) == 0)
            return m;
    return -1;
}

int mix_parse(struct method_mix *m, const char *spec, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    if (strncmp(spec, "mix=", 4) != 0) {
        int method = method_by_name(spec, strlen(spec));
        if (method < 0) {
            snprintf(err, errlen, "-m '%s': expected bind, query, deliver, unbind, heartbeat or mix=...",
                     spec);
            return -1;
        }
        m->count = 1;
        m->method[0] = (uint8_t)method;
        m->upto[0] = m->total = 1;
        return 0;
    }
    const char *p = spec + 4;
    while (*p != '\0') {
        const char *colon = strchr(p, ':');
        const char *comma = strchr(p, ',');
        if (comma == NULL)
            comma = p + strlen(p);
        if (colon == NULL || colon > comma) {
            snprintf(err, errlen, "-m '%s': each entry is METHOD:WEIGHT", spec);
            return -1;
        }
        int method = method_by_name(p, (size_t)(colon - p));
        char *end;
        unsigned long w = strtoul(colon + 1, &end, 10);
        if (method < 0 || end != comma || w == 0 || w > 1000000) {
            snprintf(err, errlen, "-m '%s': bad entry '%.*s' (METHOD:WEIGHT, weight 1..1000000)", spec,
                     (int)(comma - p), p);
            return -1;
        }
        for (int i = 0; i < m->count; i++) {
            if (m->method[i] == method) {
                snprintf(err, errlen, "-m '%s': %s named twice", spec, short_names[method]);
                return -1;
            }
        }
        m->method[m->count] = (uint8_t)method;
        m->total += (uint32_t)w;
        m->upto[m->count] = m->total;
        m->count++;
        p = *comma == ',' ? comma + 1 : comma;
    }
    if (m->count == 0) {
        snprintf(err, errlen, "-m '%s': empty mix", spec);
        return -1;
    }
    return 0;
}

int mix_next(const struct method_mix *m, uint64_t *rng)
{
    if (m->count == 1)
        return m->method[0];
    uint32_t r = (uint32_t)(((rng_next(rng) >> 32) * m->total) >> 32);
    for (int i = 0; i < m->count - 1; i++)
        if (r < m->upto[i])
            return m->method[i];
    return m->method[m->count - 1];
}

const char *mix_name(const struct method_mix *m, char *buf, size_t len)
{
    if (m->count == 1) {
        snprintf(buf, len, "%s", short_names[m->method[0]]);
        return buf;
    }
    size_t used = (size_t)snprintf(buf, len, "mix=");
    for (int i = 0; i < m->count && used < len; i++) {
        uint32_t w = m->upto[i] - (i > 0 ? m->upto[i - 1] : 0);
        used += (size_t)snprintf(buf + used, len - used, "%s%s:%" PRIu32, i > 0 ? "," : "",
                                 short_names[m->method[i]], w);
    }
    return buf;
}

/* --- request frames ------------------------------------------------------------------- */

static const char bench_client_ip[] = "127.0.0.1";
static const char bench_message_type[] = "bench";

/* Pack method's request for uid into out (NULL: just the size). */
static size_t pack_args(const struct encoder *e, int method, int64_t uid, uint8_t *out)
{
    ProtobufCBinaryData gw = {strlen(e->gateway), (uint8_t *)e->gateway};
    switch (method) {
    case PR_METHOD_BIND: {
        Mpim__BindRouteReq r = MPIM__BIND_ROUTE_REQ__INIT;
        r.user_id = uid;
        r.gateway_addr = gw;
        r.client_ip.data = (uint8_t *)bench_client_ip;
        r.client_ip.len = sizeof(bench_client_ip) - 1;
        r.client_port = 40000;
        return out ? mpim__bind_route_req__pack(&r, out) : mpim__bind_route_req__get_packed_size(&r);
    }
    case PR_METHOD_QUERY: {
        Mpim__QueryRouteReq r = MPIM__QUERY_ROUTE_REQ__INIT;
        r.user_id = uid;
        return out ? mpim__query_route_req__pack(&r, out) : mpim__query_route_req__get_packed_size(&r);
    }
    case PR_METHOD_DELIVER: {
        Mpim__DeliverReq r = MPIM__DELIVER_REQ__INIT;
        r.user_id = uid;
        r.message.data = (uint8_t *)e->message;
        r.message.len = e->message_len;
        r.message_type.data = (uint8_t *)bench_message_type;
        r.message_type.len = sizeof(bench_message_type) - 1;
        return out ? mpim__deliver_req__pack(&r, out) : mpim__deliver_req__get_packed_size(&r);
    }
    case PR_METHOD_UNBIND: {
        Mpim__UnbindRouteReq r = MPIM__UNBIND_ROUTE_REQ__INIT;
        r.user_id = uid;
        r.gateway_addr = gw;
        return out ? mpim__unbind_route_req__pack(&r, out) : mpim__unbind_route_req__get_packed_size(&r);
    }
    default: {
        Mpim__HeartbeatReq r = MPIM__HEARTBEAT_REQ__INIT;
        r.user_id = uid;
        r.gateway_addr = gw;
        return out ? mpim__heartbeat_req__pack(&r, out) : mpim__heartbeat_req__get_packed_size(&r);
    }
    }
}

int encoder_init(struct encoder *e, const char *service, const char *gateway, const uint8_t *message,
                 size_t message_len)
{
    memset(e, 0, sizeof(*e));
    e->service = service;
    e->gateway = gateway;
    e->message = message;
    e->message_len = message_len;
    size_t args_max = 0;
    for (int m = 0; m < BENCH_METHODS; m++) {
        size_t args = pack_args(e, m, INT64_MAX, NULL); /* the longest varint */
        size_t frame = frame_request_size(service, request_method_name(m), args);
        if (args > args_max)
            args_max = args;
        if (frame > e->max_frame)
            e->max_frame = frame;
    }
    e->scratch_cap = args_max;
    e->scratch = malloc(args_max);
    return e->scratch == NULL ? -1 : 0;
}

void encoder_destroy(struct encoder *e)
{
    free(e->scratch);
    e->scratch = NULL;
}

size_t encoder_write(struct encoder *e, int method, int64_t uid, uint8_t *out)
{
    size_t args = pack_args(e, method, uid, e->scratch);
    return frame_write_request(out, e->service, request_method_name(method), e->scratch, args);
}

/* --- responses ------------------------------------------------------------------------ */

/* Whether a decoded response agrees with the request it answers (code already known). */
static int consistent(int method, int64_t uid, const ProtobufCMessage *msg, int code)
{
    switch (method) {
    case PR_METHOD_BIND: {
        const Mpim__BindRouteResp *r = (const Mpim__BindRouteResp *)msg;
        if (code != MPIM__CODE__OK)
            return 1;
        /* On a Redis Cluster the key carries the user id as hash tag (contract §10). */
        char want[40], tagged[40];
        snprintf(want, sizeof(want), "user:route:%" PRId64, uid);
        snprintf(tagged, sizeof(tagged), "user:route:{%" PRId64 "}", uid);
        return r->route_key != NULL && (strcmp(r->route_key, want) == 0 || strcmp(r->route_key, tagged) == 0);
    }
    case PR_METHOD_QUERY: {
        const Mpim__QueryRouteResp *r = (const Mpim__QueryRouteResp *)msg;
        if (code == MPIM__CODE__OK)
            return r->is_online && r->gateway_addr.len > 0;
        if (code == MPIM__CODE__NOT_FOUND)
            return !r->is_online;
        return 1;
    }
    case PR_METHOD_DELIVER: {
        const Mpim__DeliverResp *r = (const Mpim__DeliverResp *)msg;
        if (code == MPIM__CODE__OK || code == MPIM__CODE__NOT_FOUND)
            return r->timestamp > 0;
        return 1;
    }
    default:
        return 1;
    }
}

int response_check(int method, int64_t uid, const uint8_t *body, size_t len, int *code, char *msg,
                   size_t msglen)
{
    uint8_t arena_buf[512];
    struct pb_arena arena;
    pb_arena_init(&arena, arena_buf, sizeof(arena_buf));
    if (method < 0 || method >= BENCH_METHODS)
        return -1;
    ProtobufCMessage *m = protobuf_c_message_unpack(codec_response_descriptor(method), &arena.allocator, len, body);
    if (m == NULL)
        return -1;
    /* Every response message starts with `Result result = 1` (contract §1). */
    const Mpim__Result *res = ((const Mpim__ErrorResp *)m)->result;
    int c = res == NULL ? MPIM__CODE__OK : (int)res->code;
    if (c < 0 || c >= CODE_SLOTS - 1)
        c = CODE_SLOTS - 1;
    *code = c;
    if (c != MPIM__CODE__OK && msg != NULL && msglen > 0)
        snprintf(msg, msglen, "%s", res != NULL && res->msg != NULL ? res->msg : "");
    int ok = consistent(method, uid, m, c);
    protobuf_c_message_free_unpacked(m, &arena.allocator);
    return ok ? 0 : -1;
}
