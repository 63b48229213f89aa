#include "core/codec.h"

#include <stdio.h>
#include <string.h>

#include "core/config.h"
#include "core/frame.h"
#include "core/session_list.h"
#include "presence.pb-c.h"

#define GATEWAY_MAX 255

static const ProtobufCMessageDescriptor *const request_desc[PR_METHOD_COUNT] = {
    [PR_METHOD_BIND] = &mpim__bind_route_req__descriptor,
    [PR_METHOD_QUERY] = &mpim__query_route_req__descriptor,
    [PR_METHOD_DELIVER] = &mpim__deliver_req__descriptor,
    [PR_METHOD_UNBIND] = &mpim__unbind_route_req__descriptor,
    [PR_METHOD_HEARTBEAT] = &mpim__heartbeat_req__descriptor,
    [PR_METHOD_STATS] = &mpim__stats_req__descriptor,
    [PR_METHOD_BATCH_QUERY] = &mpim__batch_query_route_req__descriptor,
    [PR_METHOD_BATCH_DELIVER] = &mpim__batch_deliver_req__descriptor,
    [PR_METHOD_GATEWAY_HEARTBEAT] = &mpim__gateway_heartbeat_req__descriptor,
    [PR_METHOD_DRAIN_GATEWAY] = &mpim__drain_gateway_req__descriptor,
};

static const ProtobufCMessageDescriptor *const response_desc[PR_METHOD_COUNT] = {
    [PR_METHOD_BIND] = &mpim__bind_route_resp__descriptor,
    [PR_METHOD_QUERY] = &mpim__query_route_resp__descriptor,
    [PR_METHOD_DELIVER] = &mpim__deliver_resp__descriptor,
    [PR_METHOD_UNBIND] = &mpim__unbind_route_resp__descriptor,
    [PR_METHOD_HEARTBEAT] = &mpim__heartbeat_resp__descriptor,
    [PR_METHOD_STATS] = &mpim__stats_resp__descriptor,
    [PR_METHOD_BATCH_QUERY] = &mpim__batch_query_route_resp__descriptor,
    [PR_METHOD_BATCH_DELIVER] = &mpim__batch_deliver_resp__descriptor,
    [PR_METHOD_GATEWAY_HEARTBEAT] = &mpim__gateway_heartbeat_resp__descriptor,
    [PR_METHOD_DRAIN_GATEWAY] = &mpim__drain_gateway_resp__descriptor,
};

const ProtobufCMessageDescriptor *codec_response_descriptor(int method)
{
    return method >= 0 && method < PR_METHOD_COUNT ? response_desc[method] : NULL;
}

static bool bytes_eq(const ProtobufCBinaryData *b, const char *s)
{
    size_t n = strlen(s);
    return b->len == n && (n == 0 || memcmp(b->data, s, n) == 0);
}

/* A client's name, echoed in Result.msg: a proto3 string must be UTF-8, so anything but
 * printable ASCII becomes '?', and it is cut to 64 bytes. */
static const char *printable(const ProtobufCBinaryData *b, char *out, size_t size)
{
    size_t n = b->len < size - 1 ? b->len : size - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = b->data[i] >= 0x20 && b->data[i] < 0x7f ? (char)b->data[i] : '?';
    out[n] = '\0';
    return out;
}

int codec_lookup(const ProtobufCBinaryData *service, const ProtobufCBinaryData *method,
                 struct pr_request *req)
{
    char name[65];
    if (!bytes_eq(service, CODEC_SERVICE) && !bytes_eq(service, "mpim." CODEC_SERVICE)) {
        request_set_result(req, MPIM__CODE__INVALID, "unknown service '%s'",
                           printable(service, name, sizeof(name)));
        return -1;
    }
    for (int m = 0; m < PR_METHOD_COUNT; m++)
        if (bytes_eq(method, request_method_name(m)))
            return m;
    request_set_result(req, MPIM__CODE__INVALID, "unknown method '%s'", printable(method, name, sizeof(name)));
    return -1;
}

const char *codec_check_user_id(int64_t user_id)
{
    return user_id > 0 ? NULL : "user_id must be > 0";
}

const char *codec_check_gateway(const uint8_t *gw, size_t len)
{
    if (len == 0)
        return "gateway_addr is required";
    if (len > GATEWAY_MAX)
        return "gateway_addr longer than 255 bytes";
    for (size_t i = 0; i < len; i++)
        if (gw[i] < 0x20 || gw[i] > 0x7e) /* printable ASCII, space included (contract §3) */
            return "gateway_addr must be printable ASCII";
    return NULL;
}

/* Pull user_id and the fields the shard needs out of the decoded message. */
static void extract_fields(struct pr_request *req, int dialect)
{
    switch (req->method) {
    case PR_METHOD_BIND: {
        Mpim__BindRouteReq *m = (Mpim__BindRouteReq *)req->args;
        req->user_id = m->user_id;
        req->gateway = m->gateway_addr;
        req->device = m->device_id;
        req->platform = m->platform;
        break;
    }
    case PR_METHOD_QUERY:
        req->user_id = ((Mpim__QueryRouteReq *)req->args)->user_id;
        break;
    case PR_METHOD_DELIVER: {
        Mpim__DeliverReq *m = (Mpim__DeliverReq *)req->args;
        req->user_id = m->user_id;
        /* MPIM's field 3 is the payload; the design's is message_type, which we do not use. */
        req->message = dialect == DIALECT_MPIM ? m->message_type : m->message;
        break;
    }
    case PR_METHOD_UNBIND: {
        Mpim__UnbindRouteReq *m = (Mpim__UnbindRouteReq *)req->args;
        req->user_id = m->user_id;
        req->gateway = m->gateway_addr;
        req->device = m->device_id;
        req->fence = m->epoch;
        break;
    }
    case PR_METHOD_HEARTBEAT: {
        Mpim__HeartbeatReq *m = (Mpim__HeartbeatReq *)req->args;
        req->user_id = m->user_id;
        req->gateway = m->gateway_addr;
        req->device = m->device_id;
        req->fence = m->epoch;
        break;
    }
    case PR_METHOD_BATCH_DELIVER:
        /* A message of its own (§7): field 2 is the payload in either dialect. */
        req->message = ((Mpim__BatchDeliverReq *)req->args)->message;
        break;
    case PR_METHOD_GATEWAY_HEARTBEAT: {
        Mpim__GatewayHeartbeatReq *m = (Mpim__GatewayHeartbeatReq *)req->args;
        req->gateway = m->gateway_addr;
        req->lease_ms = m->lease_ms;
        break;
    }
    case PR_METHOD_DRAIN_GATEWAY:
        req->gateway = ((Mpim__DrainGatewayReq *)req->args)->gateway_addr;
        break;
    case PR_METHOD_STATS:
    case PR_METHOD_BATCH_QUERY: /* its ids stay in args (core/batch.h) */
        break;
    }
}

int codec_decode_request(struct pr_request *req, const uint8_t *args, size_t len,
                         size_t max_message_bytes, int dialect)
{
    pb_arena_init(&req->arena, req->arena_buf, sizeof(req->arena_buf));
    req->args = protobuf_c_message_unpack(request_desc[req->method], &req->arena.allocator, len, args);
    if (req->args == NULL) {
        request_set_result(req, MPIM__CODE__INVALID, "%s args do not parse",
                           request_method_name(req->method));
        return -1;
    }
    extract_fields(req, dialect);

    if (req->method == PR_METHOD_STATS)
        return 0;
    bool batch = req->method == PR_METHOD_BATCH_QUERY || req->method == PR_METHOD_BATCH_DELIVER;
    /* Gateway leases and drains (§8) name a gateway, no user. */
    bool gateway_call = request_names_gateway(req->method);
    /* A batch's ids are judged one by one (INVALID in their own entries), its size by the acceptor. */
    const char *why = batch || gateway_call ? NULL : codec_check_user_id(req->user_id);
    if (why == NULL && !batch && req->method != PR_METHOD_QUERY && req->method != PR_METHOD_DELIVER)
        why = codec_check_gateway(req->gateway.data, req->gateway.len);
    if (why == NULL && (req->method == PR_METHOD_DELIVER || req->method == PR_METHOD_BATCH_DELIVER) &&
        req->message.len > max_message_bytes)
        why = "message larger than max_message_bytes";
    if (why == NULL && req->method == PR_METHOD_GATEWAY_HEARTBEAT &&
        (req->lease_ms < CODEC_LEASE_MIN_MS || req->lease_ms > CODEC_LEASE_MAX_MS))
        why = "lease_ms must be 1000-600000";
    if (why == NULL)
        why = session_check_device((const char *)req->device.data, req->device.len);
    if (why == NULL && (req->platform < 0 || req->platform > 255))
        why = "platform must be 0-255";
    if (why != NULL) {
        request_set_result(req, MPIM__CODE__INVALID, "%s", why);
        return -1;
    }
    return 0;
}

/* The response message for req, built on the caller's stack (no allocation). */
union response {
    ProtobufCMessage base;
    Mpim__ErrorResp error;
    Mpim__BindRouteResp bind;
    Mpim__QueryRouteResp query;
    Mpim__DeliverResp deliver;
    Mpim__UnbindRouteResp unbind;
    Mpim__HeartbeatResp heartbeat;
    Mpim__BatchQueryRouteResp batch_query;
    Mpim__BatchDeliverResp batch_deliver;
    Mpim__GatewayHeartbeatResp gateway_heartbeat;
    Mpim__DrainGatewayResp drain_gateway;
};

static void build_response(const struct pr_request *req, union response *r, Mpim__Result *result)
{
    mpim__result__init(result);
    result->code = (Mpim__Code)req->code;
    result->msg = (char *)req->msg;

    /* Requests refused before their args decoded get the bare Result: every client can read it. */
    if (req->args == NULL) {
        mpim__error_resp__init(&r->error);
        r->error.result = result;
        return;
    }
    switch (req->method) {
    case PR_METHOD_BIND:
        mpim__bind_route_resp__init(&r->bind);
        r->bind.result = result;
        if (req->code == MPIM__CODE__OK && req->route != NULL) {
            r->bind.route_key = req->route; /* the key the shard wrote, NUL-terminated */
            r->bind.epoch = req->epoch;
            if (req->sessions != NULL) {
                r->bind.n_displaced = req->sessions->n;
                r->bind.displaced = req->sessions->ptrs;
            }
        }
        break;
    case PR_METHOD_QUERY:
        mpim__query_route_resp__init(&r->query);
        r->query.result = result;
        r->query.gateway_addr.data = (uint8_t *)req->route;
        r->query.gateway_addr.len = req->route != NULL ? req->route_len : 0;
        r->query.is_online = req->flag;
        if (req->sessions != NULL) {
            r->query.n_sessions = req->sessions->n;
            r->query.sessions = req->sessions->ptrs;
        }
        break;
    case PR_METHOD_DELIVER:
        mpim__deliver_resp__init(&r->deliver);
        r->deliver.result = result;
        r->deliver.delivered = req->flag;
        r->deliver.timestamp = req->timestamp;
        break;
    case PR_METHOD_UNBIND:
        mpim__unbind_route_resp__init(&r->unbind);
        r->unbind.result = result;
        r->unbind.unbound = req->flag;
        break;
    case PR_METHOD_BATCH_QUERY: /* a gathered answer is packed (core/batch.h): here only refusals */
        mpim__batch_query_route_resp__init(&r->batch_query);
        r->batch_query.result = result;
        break;
    case PR_METHOD_BATCH_DELIVER:
        mpim__batch_deliver_resp__init(&r->batch_deliver);
        r->batch_deliver.result = result;
        r->batch_deliver.timestamp = req->timestamp;
        break;
    case PR_METHOD_GATEWAY_HEARTBEAT:
        mpim__gateway_heartbeat_resp__init(&r->gateway_heartbeat);
        r->gateway_heartbeat.result = result;
        r->gateway_heartbeat.expires_ms = req->count;
        break;
    case PR_METHOD_DRAIN_GATEWAY:
        mpim__drain_gateway_resp__init(&r->drain_gateway);
        r->drain_gateway.result = result;
        r->drain_gateway.sessions_removed = req->count;
        break;
    case PR_METHOD_STATS: /* only reached without stats: an error */
        mpim__error_resp__init(&r->error);
        r->error.result = result;
        break;
    default:
        mpim__heartbeat_resp__init(&r->heartbeat);
        r->heartbeat.result = result;
        r->heartbeat.refreshed = req->flag;
        break;
    }
}

size_t codec_response_size(const struct pr_request *req)
{
    if (req->packed != NULL)
        return FRAME_PREFIX + req->packed_len;
    union response r;
    Mpim__Result result;
    build_response(req, &r, &result);
    return FRAME_PREFIX + protobuf_c_message_get_packed_size(&r.base);
}

size_t codec_response_bound(const struct pr_request *req)
{
    if (req->packed != NULL)
        return FRAME_PREFIX + req->packed_len;
    /* Result: tag+len (1+2), code (1+10), msg (1+2+PR_MSG_MAX); then at most one bytes field
     * (route or route_key: 1+10+len), a bool (2), an int64 timestamp or epoch (1+10), and the
     * sessions listed (their own bound). */
    size_t route = req->route != NULL ? req->route_len : 0;
    size_t sessions = req->sessions != NULL ? req->sessions->wire_bound : 0;
    return FRAME_PREFIX + 3 + 11 + 3 + PR_MSG_MAX + 11 + route + 2 + 11 + sessions;
}

size_t codec_encode_response(const struct pr_request *req, uint8_t *out)
{
    if (req->packed != NULL) {
        frame_put_u32le(out, (uint32_t)req->packed_len);
        memcpy(out + FRAME_PREFIX, req->packed, req->packed_len);
        return FRAME_PREFIX + req->packed_len;
    }
    union response r;
    Mpim__Result result;
    build_response(req, &r, &result);
    size_t n = protobuf_c_message_pack(&r.base, out + FRAME_PREFIX);
    frame_put_u32le(out, (uint32_t)n);
    return FRAME_PREFIX + n;
}
