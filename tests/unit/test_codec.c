/* core/codec: method lookup, request decoding + validation, response encoding (contract §1–3). */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/config.h"
#include "core/frame.h"
#include "core/request.h"
#include "leak.h"
#include "presence.pb-c.h"

#define MAX_MSG (256u << 10)

_Static_assert(PR_METHOD_COUNT == 10, "a method was added: update method_names and these tests");
static const char *const method_names[PR_METHOD_COUNT] = {"BindRoute",   "QueryRoute", "Deliver",
                                                          "UnbindRoute", "Heartbeat",  "Stats",
                                                          "BatchQueryRoute", "BatchDeliver",
                                                          "GatewayHeartbeat", "DrainGateway"};

/* The methods that name a user (and are validated); Stats names none. */
static const int user_methods[] = {PR_METHOD_BIND, PR_METHOD_QUERY, PR_METHOD_DELIVER, PR_METHOD_UNBIND,
                                   PR_METHOD_HEARTBEAT};
#define N_USER_METHODS (sizeof(user_methods) / sizeof(user_methods[0]))

static ProtobufCBinaryData bin(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
    return b;
}

static void req_init(struct pr_request *req, int method)
{
    memset(req, 0, sizeof(*req));
    req->method = (uint8_t)method;
}

/* Pack a request of `method` carrying uid, gateway (Bind/Unbind/Heartbeat) and message
 * (Deliver). Returns a malloc'd buffer, *len its size. */
static uint8_t *pack_request(int method, int64_t uid, const void *gw, size_t gw_len, const void *msg,
                             size_t msg_len, size_t *len)
{
    Mpim__BindRouteReq bind = MPIM__BIND_ROUTE_REQ__INIT;
    Mpim__QueryRouteReq query = MPIM__QUERY_ROUTE_REQ__INIT;
    Mpim__DeliverReq deliver = MPIM__DELIVER_REQ__INIT;
    Mpim__UnbindRouteReq unbind = MPIM__UNBIND_ROUTE_REQ__INIT;
    Mpim__HeartbeatReq hb = MPIM__HEARTBEAT_REQ__INIT;
    Mpim__StatsReq stats = MPIM__STATS_REQ__INIT;
    ProtobufCBinaryData g = {gw_len, (uint8_t *)gw};
    ProtobufCMessage *m = NULL;
    switch (method) {
    case PR_METHOD_BIND:
        bind.user_id = uid;
        bind.gateway_addr = g;
        bind.client_ip = bin("10.0.0.7");
        bind.client_port = 40000;
        m = &bind.base;
        break;
    case PR_METHOD_QUERY:
        query.user_id = uid;
        m = &query.base;
        break;
    case PR_METHOD_DELIVER:
        deliver.user_id = uid;
        deliver.message.data = (uint8_t *)msg;
        deliver.message.len = msg_len;
        deliver.message_type = bin("text");
        m = &deliver.base;
        break;
    case PR_METHOD_UNBIND:
        unbind.user_id = uid;
        unbind.gateway_addr = g;
        m = &unbind.base;
        break;
    case PR_METHOD_HEARTBEAT:
        hb.user_id = uid;
        hb.gateway_addr = g;
        m = &hb.base;
        break;
    case PR_METHOD_STATS:
        m = &stats.base;
        break;
    }
    cr_assert_not_null(m);
    *len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(*len > 0 ? *len : 1);
    cr_assert_not_null(buf);
    cr_assert_eq(protobuf_c_message_pack(m, buf), *len);
    return buf;
}

/* Decode as method; returns the codec's result and leaves req for inspection. */
static int decode(struct pr_request *req, int method, int64_t uid, const void *gw, size_t gw_len,
                  const void *msg, size_t msg_len, size_t max_msg)
{
    size_t len;
    uint8_t *buf = pack_request(method, uid, gw, gw_len, msg, msg_len, &len);
    req_init(req, method);
    int rc = codec_decode_request(req, buf, len, max_msg, DIALECT_SEED);
    /* The decoded message must not point into the caller's buffer: poison it. */
    memset(buf, 0xee, len);
    free(buf);
    return rc;
}

static bool has_gateway(int m)
{
    return m == PR_METHOD_BIND || m == PR_METHOD_UNBIND || m == PR_METHOD_HEARTBEAT;
}

/* ---- codec_lookup ---- */

Test(codec, lookup_all_methods_both_service_names)
{
    const char *services[] = {"PresenceService", "mpim.PresenceService"};
    for (int s = 0; s < 2; s++) {
        for (int m = 0; m < PR_METHOD_COUNT; m++) {
            struct pr_request req;
            req_init(&req, 0);
            ProtobufCBinaryData sv = bin(services[s]), me = bin(method_names[m]);
            cr_assert_eq(codec_lookup(&sv, &me, &req), m, "%s/%s", services[s], method_names[m]);
            cr_assert_eq(req.code, MPIM__CODE__OK);
            cr_assert_str_eq(request_method_name(m), method_names[m]);
        }
    }
    expect_no_leaks();
}

Test(codec, lookup_unknown_service)
{
    const char *bad[] = {"Foo",
                         "presenceservice",
                         "PresenceServic",
                         "PresenceServiceX",
                         "mpim.PresenceServiceX",
                         "xmpim.PresenceService",
                         "mpim."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pr_request req;
        req_init(&req, 0);
        ProtobufCBinaryData sv = bin(bad[i]), me = bin("BindRoute");
        cr_assert_eq(codec_lookup(&sv, &me, &req), -1, "service '%s'", bad[i]);
        cr_assert_eq(req.code, MPIM__CODE__INVALID);
        cr_assert_not_null(strstr(req.msg, "service"), "msg '%s'", req.msg);
        cr_assert_not_null(strstr(req.msg, bad[i]), "msg '%s' must name '%s'", req.msg, bad[i]);
    }
    expect_no_leaks();
}

Test(codec, lookup_unknown_method)
{
    const char *bad[] = {"Nope", "bindroute", "BindRoute2", "Bind", "", "Deliver "};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct pr_request req;
        req_init(&req, 0);
        ProtobufCBinaryData sv = bin("PresenceService"), me = bin(bad[i]);
        cr_assert_eq(codec_lookup(&sv, &me, &req), -1, "method '%s'", bad[i]);
        cr_assert_eq(req.code, MPIM__CODE__INVALID);
        cr_assert_not_null(strstr(req.msg, "method"), "msg '%s'", req.msg);
        char quoted[64];
        snprintf(quoted, sizeof(quoted), "'%s'", bad[i]);
        cr_assert_not_null(strstr(req.msg, quoted), "msg '%s' must name '%s'", req.msg, bad[i]);
    }
    expect_no_leaks();
}

Test(codec, lookup_empty_service_and_long_names)
{
    struct pr_request req;
    req_init(&req, 0);
    ProtobufCBinaryData empty = {0, NULL}, me = bin("BindRoute");
    cr_assert_eq(codec_lookup(&empty, &me, &req), -1);
    cr_assert_eq(req.code, MPIM__CODE__INVALID);

    /* A name far longer than the message buffer is clipped, never overflows. */
    char longname[5000];
    memset(longname, 'Z', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    ProtobufCBinaryData sv = bin("PresenceService"), lm = bin(longname);
    req_init(&req, 0);
    cr_assert_eq(codec_lookup(&sv, &lm, &req), -1);
    cr_assert_lt(strlen(req.msg), (size_t)PR_MSG_MAX);
    cr_assert_not_null(strstr(req.msg, "ZZZZ"));
    ProtobufCBinaryData ls = bin(longname);
    req_init(&req, 0);
    cr_assert_eq(codec_lookup(&ls, &me, &req), -1);
    cr_assert_lt(strlen(req.msg), (size_t)PR_MSG_MAX);

    /* Method names are compared as bytes: an embedded NUL does not match a prefix. */
    ProtobufCBinaryData nul = {10, (uint8_t *)"BindRoute\0"};
    req_init(&req, 0);
    cr_assert_eq(codec_lookup(&sv, &nul, &req), -1);
    expect_no_leaks();
}

/* ---- codec_decode_request: valid ---- */

Test(codec, decode_valid_each_method)
{
    const char *gw = "10.1.2.3:9000";
    const uint8_t payload[] = {'h', 'i', 0, 0xff, '\n', 0x80};
    for (size_t k = 0; k < N_USER_METHODS; k++) {
        int m = user_methods[k];
        struct pr_request req;
        int rc = decode(&req, m, 1000 + m, gw, strlen(gw), payload, sizeof(payload), MAX_MSG);
        cr_assert_eq(rc, 0, "%s: %s", method_names[m], req.msg);
        cr_assert_eq(req.code, MPIM__CODE__OK);
        cr_assert_not_null(req.args);
        cr_assert_eq(req.user_id, 1000 + m);
        if (has_gateway(m)) {
            cr_assert_eq(req.gateway.len, strlen(gw), "%s", method_names[m]);
            cr_assert_eq(memcmp(req.gateway.data, gw, strlen(gw)), 0);
        } else {
            cr_assert_eq(req.gateway.len, 0);
        }
        if (m == PR_METHOD_DELIVER) {
            cr_assert_eq(req.message.len, sizeof(payload));
            cr_assert_eq(memcmp(req.message.data, payload, sizeof(payload)), 0,
                         "binary payload must pass through untouched");
        } else {
            cr_assert_eq(req.message.len, 0);
        }
        request_reset(&req);
        cr_assert_null(req.args);
    }
    expect_no_leaks();
}

Test(codec, decode_int64_max_user)
{
    for (size_t k = 0; k < N_USER_METHODS; k++) {
        int m = user_methods[k];
        struct pr_request req;
        cr_assert_eq(decode(&req, m, INT64_MAX, "gw", 2, "x", 1, MAX_MSG), 0, "%s", method_names[m]);
        cr_assert_eq(req.user_id, INT64_MAX);
        request_reset(&req);
    }
    expect_no_leaks();
}

Test(codec, decode_query_and_deliver_ignore_gateway_rules)
{
    /* QueryRoute and Deliver carry no gateway: nothing to validate there. */
    struct pr_request req;
    cr_assert_eq(decode(&req, PR_METHOD_QUERY, 5, NULL, 0, NULL, 0, MAX_MSG), 0);
    request_reset(&req);
    cr_assert_eq(decode(&req, PR_METHOD_DELIVER, 5, NULL, 0, NULL, 0, MAX_MSG), 0,
                 "an empty Deliver payload is allowed");
    cr_assert_eq(req.message.len, 0);
    request_reset(&req);
    expect_no_leaks();
}

Test(codec, decode_unknown_fields_tolerated)
{
    /* QueryRouteReq{user_id = 7} followed by an unknown field 15 (string "zz"). */
    const uint8_t buf[] = {0x08, 0x07, 0x7a, 0x02, 'z', 'z'};
    struct pr_request req;
    req_init(&req, PR_METHOD_QUERY);
    cr_assert_eq(codec_decode_request(&req, buf, sizeof(buf), MAX_MSG, DIALECT_SEED), 0, "%s", req.msg);
    cr_assert_eq(req.user_id, 7);
    request_reset(&req);
    expect_no_leaks();
}

/* ---- codec_decode_request: validation ---- */

static void expect_invalid(struct pr_request *req, int rc, const char *field, const char *what)
{
    cr_assert_eq(rc, -1, "%s: accepted", what);
    cr_assert_eq(req->code, MPIM__CODE__INVALID, "%s: code %d", what, req->code);
    cr_assert_not_null(strstr(req->msg, field), "%s: msg '%s' must name %s", what, req->msg, field);
    request_reset(req);
}

Test(codec, invalid_user_id)
{
    const int64_t bad[] = {0, -1, -42, INT64_MIN};
    for (size_t k = 0; k < N_USER_METHODS; k++) {
        int m = user_methods[k];
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            struct pr_request req;
            int rc = decode(&req, m, bad[i], "gw:1", 4, "x", 1, MAX_MSG);
            char what[64];
            snprintf(what, sizeof(what), "%s user_id %lld", method_names[m], (long long)bad[i]);
            expect_invalid(&req, rc, "user_id", what);
        }
    }
    expect_no_leaks();
}

Test(codec, empty_args_mean_user_id_zero)
{
    for (size_t k = 0; k < N_USER_METHODS; k++) {
        int m = user_methods[k];
        struct pr_request req;
        req_init(&req, m);
        int rc = codec_decode_request(&req, (const uint8_t *)"", 0, MAX_MSG, DIALECT_SEED);
        expect_invalid(&req, rc, "user_id", method_names[m]);
    }
    expect_no_leaks();
}

Test(codec, invalid_gateway)
{
    char long256[256], nul[] = {'g', 'w', '\0', 'x'};
    memset(long256, 'a', sizeof(long256));
    const uint8_t nonascii[] = {'g', 0x80, 'w'}, del[] = {'g', 0x7f}, tab[] = {'g', '\t'}, nl[] = {'g', '\n'},
                  high[] = {0xff};
    struct {
        const void *gw;
        size_t len;
        const char *what;
    } bad[] = {
        {"", 0, "empty"},
        {long256, 256, "256 bytes"},
        {"gw\x01:9000", 8, "control byte"},
        {nul, sizeof(nul), "NUL byte"},
        {nonascii, sizeof(nonascii), "0x80"},
        {high, sizeof(high), "0xff"},
        {del, sizeof(del), "DEL"},
        {tab, sizeof(tab), "tab"},
        {nl, sizeof(nl), "newline"},
    };
    for (size_t k = 0; k < N_USER_METHODS; k++) {
        int m = user_methods[k];
        if (!has_gateway(m))
            continue;
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            struct pr_request req;
            int rc = decode(&req, m, 77, bad[i].gw, bad[i].len, NULL, 0, MAX_MSG);
            char what[64];
            snprintf(what, sizeof(what), "%s gateway %s", method_names[m], bad[i].what);
            expect_invalid(&req, rc, "gateway_addr", what);
        }
    }
    expect_no_leaks();
}

Test(codec, gateway_boundaries_accepted)
{
    char long255[255];
    memset(long255, 'b', sizeof(long255));
    /* Every printable ASCII byte, space and colons included. */
    char all[95];
    for (int i = 0; i < 95; i++)
        all[i] = (char)(0x20 + i);
    for (size_t k = 0; k < N_USER_METHODS; k++) {
        int m = user_methods[k];
        if (!has_gateway(m))
            continue;
        struct pr_request req;
        cr_assert_eq(decode(&req, m, 9, long255, sizeof(long255), NULL, 0, MAX_MSG), 0, "%s: %s",
                     method_names[m], req.msg);
        cr_assert_eq(req.gateway.len, 255);
        request_reset(&req);
        cr_assert_eq(decode(&req, m, 9, all, sizeof(all), NULL, 0, MAX_MSG), 0, "%s: %s", method_names[m],
                     req.msg);
        request_reset(&req);
        cr_assert_eq(decode(&req, m, 9, "g", 1, NULL, 0, MAX_MSG), 0);
        request_reset(&req);
    }
    expect_no_leaks();
}

Test(codec, user_id_checked_before_gateway)
{
    struct pr_request req;
    int rc = decode(&req, PR_METHOD_BIND, 0, "", 0, NULL, 0, MAX_MSG);
    expect_invalid(&req, rc, "user_id", "both bad");
    expect_no_leaks();
}

Test(codec, message_size_limit)
{
    size_t max = 16;
    uint8_t payload[17];
    memset(payload, 'm', sizeof(payload));
    struct pr_request req;
    cr_assert_eq(decode(&req, PR_METHOD_DELIVER, 3, NULL, 0, payload, max, max), 0);
    cr_assert_eq(req.message.len, max);
    request_reset(&req);
    int rc = decode(&req, PR_METHOD_DELIVER, 3, NULL, 0, payload, max + 1, max);
    expect_invalid(&req, rc, "message", "max + 1");

    /* The default limit, 256 KiB, exactly and one over. */
    uint8_t *big = malloc(MAX_MSG + 1);
    memset(big, 0x5a, MAX_MSG + 1);
    cr_assert_eq(decode(&req, PR_METHOD_DELIVER, 3, NULL, 0, big, MAX_MSG, MAX_MSG), 0);
    cr_assert_eq(req.message.len, MAX_MSG);
    cr_assert_eq(req.message.data[MAX_MSG - 1], 0x5a);
    request_reset(&req);
    rc = decode(&req, PR_METHOD_DELIVER, 3, NULL, 0, big, MAX_MSG + 1, MAX_MSG);
    expect_invalid(&req, rc, "message", "256 KiB + 1");
    free(big);
    expect_no_leaks();
}

Test(codec, garbage_args_do_not_parse)
{
    const uint8_t garbage[][6] = {
        {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, /* endless varint */
        {0x12, 0x7f, 'a', 'b', 0, 0},         /* gateway claims 127 bytes */
        {0x0f, 0, 0, 0, 0, 0},                /* wire type 7 */
        {0x0a, 0x01, 0x01, 0, 0, 0},          /* user_id (varint) sent as length-delimited */
    };
    const size_t lens[] = {6, 4, 2, 3};
    for (size_t k = 0; k < N_USER_METHODS; k++) {
        int m = user_methods[k];
        for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
            struct pr_request req;
            req_init(&req, m);
            int rc = codec_decode_request(&req, garbage[i], lens[i], MAX_MSG, DIALECT_SEED);
            cr_assert_eq(rc, -1, "%s garbage %zu accepted", method_names[m], i);
            cr_assert_eq(req.code, MPIM__CODE__INVALID);
            cr_assert_null(req.args);
            cr_assert_not_null(strstr(req.msg, "args do not parse"), "msg '%s'", req.msg);
            cr_assert_not_null(strstr(req.msg, method_names[m]), "msg '%s'", req.msg);
            request_reset(&req);
        }
    }
    expect_no_leaks();
}

Test(codec, check_helpers)
{
    cr_assert_null(codec_check_user_id(1));
    cr_assert_null(codec_check_user_id(INT64_MAX));
    cr_assert_not_null(codec_check_user_id(0));
    cr_assert_not_null(codec_check_user_id(INT64_MIN));
    cr_assert_null(codec_check_gateway((const uint8_t *)"a:1", 3));
    cr_assert_not_null(codec_check_gateway((const uint8_t *)"", 0));
    cr_assert_null(codec_check_gateway((const uint8_t *)"a b", 3), "space is printable ASCII");
    cr_assert_not_null(codec_check_gateway((const uint8_t *)"a\x7f", 2));
    expect_no_leaks();
}

/* ---- codec_encode_response ---- */

/* Encode req and return the body (malloc'd frame in *frame, body after the prefix). */
static const uint8_t *encode(const struct pr_request *req, uint8_t **frame, size_t *body_len)
{
    size_t n = codec_response_size(req);
    cr_assert_gt(n, FRAME_PREFIX - 1);
    cr_assert_geq(codec_response_bound(req), n, "the acceptor reserves only the bound");
    uint8_t *out = malloc(n);
    cr_assert_not_null(out);
    cr_assert_eq(codec_encode_response(req, out), n, "size and encode disagree");
    cr_assert_eq(frame_get_u32le(out), n - FRAME_PREFIX);
    *frame = out;
    *body_len = n - FRAME_PREFIX;
    return out + FRAME_PREFIX;
}

/* A decoded, validated request of method m for uid, ready for the shard's answer. */
static void decoded(struct pr_request *req, int m, int64_t uid)
{
    cr_assert_eq(decode(req, m, uid, "gw-1:7000", 9, "payload", 7, MAX_MSG), 0);
}

Test(codec, encode_bind_ok_has_route_key)
{
    const int64_t uids[] = {1, 42, INT64_MAX};
    for (size_t i = 0; i < 3; i++) {
        struct pr_request req;
        decoded(&req, PR_METHOD_BIND, uids[i]);
        /* The shard names the key (user:route:{<uid>} on a cluster) in route, NUL-terminated. */
        int n = snprintf(req.route_inline, sizeof(req.route_inline), "user:route:{%lld}", (long long)uids[i]);
        req.route = req.route_inline;
        req.route_len = (size_t)n;
        request_set_result(&req, MPIM__CODE__OK, NULL);
        uint8_t *frame;
        size_t len;
        const uint8_t *body = encode(&req, &frame, &len);
        Mpim__BindRouteResp *r = mpim__bind_route_resp__unpack(NULL, len, body);
        cr_assert_not_null(r);
        cr_assert_not_null(r->result, "result must always be present");
        cr_assert_eq(r->result->code, MPIM__CODE__OK);
        cr_assert_str_eq(r->result->msg, "");
        cr_assert_str_eq(r->route_key, req.route_inline);
        mpim__bind_route_resp__free_unpacked(r, NULL);
        free(frame);
        request_reset(&req);
    }
    expect_no_leaks();
}

Test(codec, encode_bind_failure_has_no_route_key)
{
    struct pr_request req;
    decoded(&req, PR_METHOD_BIND, 5);
    request_set_result(&req, MPIM__CODE__UNAVAILABLE, "cache: %s", "timeout");
    uint8_t *frame;
    size_t len;
    const uint8_t *body = encode(&req, &frame, &len);
    Mpim__BindRouteResp *r = mpim__bind_route_resp__unpack(NULL, len, body);
    cr_assert_not_null(r);
    cr_assert_eq(r->result->code, MPIM__CODE__UNAVAILABLE);
    cr_assert_str_eq(r->result->msg, "cache: timeout");
    cr_assert_str_eq(r->route_key, "");
    mpim__bind_route_resp__free_unpacked(r, NULL);
    free(frame);
    request_reset(&req);
    expect_no_leaks();
}

Test(codec, encode_query)
{
    struct pr_request req;
    decoded(&req, PR_METHOD_QUERY, 8);
    const char gw[] = "gw:1\0x"; /* the route may hold any byte */
    req.route = malloc(sizeof(gw) - 1);
    memcpy(req.route, gw, sizeof(gw) - 1);
    req.route_len = sizeof(gw) - 1;
    req.flag = true;
    request_set_result(&req, MPIM__CODE__OK, NULL);
    uint8_t *frame;
    size_t len;
    const uint8_t *body = encode(&req, &frame, &len);
    Mpim__QueryRouteResp *r = mpim__query_route_resp__unpack(NULL, len, body);
    cr_assert_not_null(r);
    cr_assert_eq(r->result->code, MPIM__CODE__OK);
    cr_assert_eq(r->is_online, true);
    cr_assert_eq(r->gateway_addr.len, sizeof(gw) - 1);
    cr_assert_eq(memcmp(r->gateway_addr.data, gw, sizeof(gw) - 1), 0);
    mpim__query_route_resp__free_unpacked(r, NULL);
    free(frame);
    request_reset(&req);
    cr_assert_null(req.route);

    /* Offline: NOT_FOUND, empty gateway, not online. */
    decoded(&req, PR_METHOD_QUERY, 8);
    request_set_result(&req, MPIM__CODE__NOT_FOUND, "no route");
    body = encode(&req, &frame, &len);
    r = mpim__query_route_resp__unpack(NULL, len, body);
    cr_assert_not_null(r);
    cr_assert_eq(r->result->code, MPIM__CODE__NOT_FOUND);
    cr_assert_str_eq(r->result->msg, "no route");
    cr_assert_eq(r->is_online, false);
    cr_assert_eq(r->gateway_addr.len, 0);
    mpim__query_route_resp__free_unpacked(r, NULL);
    free(frame);
    request_reset(&req);
    expect_no_leaks();
}

Test(codec, encode_deliver)
{
    struct pr_request req;
    decoded(&req, PR_METHOD_DELIVER, 9);
    req.flag = true;
    req.timestamp = 1700000000123LL;
    request_set_result(&req, MPIM__CODE__OK, NULL);
    uint8_t *frame;
    size_t len;
    const uint8_t *body = encode(&req, &frame, &len);
    Mpim__DeliverResp *r = mpim__deliver_resp__unpack(NULL, len, body);
    cr_assert_not_null(r);
    cr_assert_eq(r->result->code, MPIM__CODE__OK);
    cr_assert_eq(r->delivered, true);
    cr_assert_eq(r->timestamp, 1700000000123LL);
    mpim__deliver_resp__free_unpacked(r, NULL);
    free(frame);
    request_reset(&req);
    expect_no_leaks();
}

Test(codec, encode_unbind_and_heartbeat)
{
    for (int flag = 0; flag <= 1; flag++) {
        struct pr_request req;
        decoded(&req, PR_METHOD_UNBIND, 10);
        req.flag = flag;
        request_set_result(&req, MPIM__CODE__OK, NULL);
        uint8_t *frame;
        size_t len;
        const uint8_t *body = encode(&req, &frame, &len);
        Mpim__UnbindRouteResp *u = mpim__unbind_route_resp__unpack(NULL, len, body);
        cr_assert_not_null(u);
        cr_assert_not_null(u->result);
        cr_assert_eq(u->result->code, MPIM__CODE__OK);
        cr_assert_eq(u->unbound, (protobuf_c_boolean)flag);
        mpim__unbind_route_resp__free_unpacked(u, NULL);
        free(frame);
        request_reset(&req);

        decoded(&req, PR_METHOD_HEARTBEAT, 11);
        req.flag = flag;
        request_set_result(&req, MPIM__CODE__OK, NULL);
        body = encode(&req, &frame, &len);
        Mpim__HeartbeatResp *h = mpim__heartbeat_resp__unpack(NULL, len, body);
        cr_assert_not_null(h);
        cr_assert_not_null(h->result);
        cr_assert_eq(h->refreshed, (protobuf_c_boolean)flag);
        mpim__heartbeat_resp__free_unpacked(h, NULL);
        free(frame);
        request_reset(&req);
    }
    expect_no_leaks();
}

/* An error reply made without decoded args holds only field 1: it decodes as ErrorResp and as
 * every method's response, with result set and everything else at its default. */
Test(codec, error_reply_decodes_as_any_response)
{
    for (int m = 0; m < PR_METHOD_COUNT; m++) {
        struct pr_request req;
        req_init(&req, m);
        request_set_result(&req, MPIM__CODE__INVALID, "unknown method '%s'", "Nope");
        cr_assert_null(req.args);
        uint8_t *frame;
        size_t len;
        const uint8_t *body = encode(&req, &frame, &len);

        Mpim__ErrorResp *e = mpim__error_resp__unpack(NULL, len, body);
        cr_assert_not_null(e);
        cr_assert_not_null(e->result);
        cr_assert_eq(e->result->code, MPIM__CODE__INVALID);
        cr_assert_str_eq(e->result->msg, "unknown method 'Nope'");
        mpim__error_resp__free_unpacked(e, NULL);

        Mpim__BindRouteResp *b = mpim__bind_route_resp__unpack(NULL, len, body);
        cr_assert_not_null(b);
        cr_assert_eq(b->result->code, MPIM__CODE__INVALID);
        cr_assert_str_eq(b->route_key, "", "no route_key on an error reply");
        mpim__bind_route_resp__free_unpacked(b, NULL);

        Mpim__QueryRouteResp *q = mpim__query_route_resp__unpack(NULL, len, body);
        cr_assert_not_null(q);
        cr_assert_eq(q->result->code, MPIM__CODE__INVALID);
        cr_assert_eq(q->is_online, false);
        cr_assert_eq(q->gateway_addr.len, 0);
        mpim__query_route_resp__free_unpacked(q, NULL);

        Mpim__DeliverResp *d = mpim__deliver_resp__unpack(NULL, len, body);
        cr_assert_not_null(d);
        cr_assert_eq(d->result->code, MPIM__CODE__INVALID);
        cr_assert_eq(d->delivered, false);
        mpim__deliver_resp__free_unpacked(d, NULL);

        Mpim__UnbindRouteResp *u = mpim__unbind_route_resp__unpack(NULL, len, body);
        cr_assert_not_null(u);
        cr_assert_eq(u->result->code, MPIM__CODE__INVALID);
        mpim__unbind_route_resp__free_unpacked(u, NULL);

        Mpim__HeartbeatResp *h = mpim__heartbeat_resp__unpack(NULL, len, body);
        cr_assert_not_null(h);
        cr_assert_eq(h->result->code, MPIM__CODE__INVALID);
        mpim__heartbeat_resp__free_unpacked(h, NULL);

        Mpim__StatsResp *st = mpim__stats_resp__unpack(NULL, len, body);
        cr_assert_not_null(st);
        cr_assert_eq(st->result->code, MPIM__CODE__INVALID);
        cr_assert_eq(st->n_stats, 0);
        mpim__stats_resp__free_unpacked(st, NULL);

        free(frame);
        request_reset(&req);
    }
    expect_no_leaks();
}

/* A request whose args decoded but failed validation still answers with its own type. */
Test(codec, validation_error_reply_round_trip)
{
    struct pr_request req;
    int rc = decode(&req, PR_METHOD_BIND, -5, "gw", 2, NULL, 0, MAX_MSG);
    cr_assert_eq(rc, -1);
    uint8_t *frame;
    size_t len;
    const uint8_t *body = encode(&req, &frame, &len);
    Mpim__ErrorResp *e = mpim__error_resp__unpack(NULL, len, body);
    cr_assert_not_null(e);
    cr_assert_eq(e->result->code, MPIM__CODE__INVALID);
    cr_assert_not_null(strstr(e->result->msg, "user_id"));
    mpim__error_resp__free_unpacked(e, NULL);
    Mpim__BindRouteResp *b = mpim__bind_route_resp__unpack(NULL, len, body);
    cr_assert_not_null(b);
    cr_assert_str_eq(b->route_key, "", "no route_key unless the bind succeeded");
    mpim__bind_route_resp__free_unpacked(b, NULL);
    free(frame);
    request_reset(&req);
    expect_no_leaks();
}

Test(codec, every_code_round_trips)
{
    for (int code = MPIM__CODE__OK; code <= MPIM__CODE__OVERLOADED; code++) {
        struct pr_request req;
        req_init(&req, PR_METHOD_DELIVER);
        request_set_result(&req, code, "c%d", code);
        uint8_t *frame;
        size_t len;
        const uint8_t *body = encode(&req, &frame, &len);
        Mpim__DeliverResp *d = mpim__deliver_resp__unpack(NULL, len, body);
        cr_assert_not_null(d);
        cr_assert_not_null(d->result);
        cr_assert_eq((int)d->result->code, code);
        char want[8];
        snprintf(want, sizeof(want), "c%d", code);
        cr_assert_str_eq(d->result->msg, want);
        mpim__deliver_resp__free_unpacked(d, NULL);
        free(frame);
    }
    expect_no_leaks();
}

/* ---- Stats: names no user, answered by the acceptor with a message it packs itself ---- */

Test(codec, stats_decodes_without_user)
{
    struct pr_request req;
    req_init(&req, PR_METHOD_STATS);
    cr_assert_eq(codec_decode_request(&req, (const uint8_t *)"", 0, MAX_MSG, DIALECT_SEED), 0, "%s", req.msg);
    cr_assert_not_null(req.args);
    cr_assert_eq(req.user_id, 0);
    request_reset(&req);
    /* Unknown fields are skipped, as for any proto3 message. */
    const uint8_t extra[] = {0x08, 0x05, 0x12, 0x01, 'x'};
    req_init(&req, PR_METHOD_STATS);
    cr_assert_eq(codec_decode_request(&req, extra, sizeof(extra), MAX_MSG, DIALECT_SEED), 0, "%s", req.msg);
    request_reset(&req);
    expect_no_leaks();
}

Test(codec, stats_garbage_does_not_parse)
{
    const uint8_t garbage[][3] = {{0xff, 0xff, 0xff}, {0x12, 0x7f, 'a'}, {0x0f, 0, 0}};
    for (size_t i = 0; i < 3; i++) {
        struct pr_request req;
        req_init(&req, PR_METHOD_STATS);
        cr_assert_eq(codec_decode_request(&req, garbage[i], i == 2 ? 1 : 3, MAX_MSG, DIALECT_SEED), -1,
                     "garbage %zu accepted", i);
        cr_assert_eq(req.code, MPIM__CODE__INVALID);
        cr_assert_null(req.args);
        cr_assert_str_eq(req.msg, "Stats args do not parse");
        request_reset(&req);
    }
    expect_no_leaks();
}

/* A response packed ahead of time goes out verbatim behind the length prefix, and request_reset
 * frees it (the leak check). */
Test(codec, stats_packed_response_verbatim)
{
    struct pr_request req;
    req_init(&req, PR_METHOD_STATS);
    cr_assert_eq(codec_decode_request(&req, (const uint8_t *)"", 0, MAX_MSG, DIALECT_SEED), 0);
    Mpim__Result result = MPIM__RESULT__INIT;
    Mpim__Stat s1 = MPIM__STAT__INIT, s2 = MPIM__STAT__INIT;
    char name1[] = "impresence_requests_total{method=\"QueryRoute\",code=\"OK\"}", name2[] = "impresence_connections";
    s1.name = name1;
    s1.value = 42;
    s2.name = name2;
    s2.value = 0.5;
    Mpim__Stat *items[] = {&s1, &s2};
    Mpim__StatsResp sr = MPIM__STATS_RESP__INIT;
    sr.result = &result;
    sr.n_stats = 2;
    sr.stats = items;
    req.packed_len = mpim__stats_resp__get_packed_size(&sr);
    req.packed = malloc(req.packed_len);
    mpim__stats_resp__pack(&sr, req.packed);
    request_set_result(&req, MPIM__CODE__OK, NULL);

    size_t n = codec_response_size(&req);
    cr_assert_eq(n, FRAME_PREFIX + req.packed_len);
    uint8_t *out = malloc(n);
    cr_assert_eq(codec_encode_response(&req, out), n);
    cr_assert_eq(frame_get_u32le(out), req.packed_len);
    cr_assert_eq(memcmp(out + FRAME_PREFIX, req.packed, req.packed_len), 0);
    Mpim__StatsResp *r = mpim__stats_resp__unpack(NULL, n - FRAME_PREFIX, out + FRAME_PREFIX);
    cr_assert_not_null(r);
    cr_assert_not_null(r->result);
    cr_assert_eq(r->result->code, MPIM__CODE__OK);
    cr_assert_eq(r->n_stats, 2);
    cr_assert_str_eq(r->stats[0]->name, s1.name);
    cr_assert_eq(r->stats[0]->value, 42);
    cr_assert_str_eq(r->stats[1]->name, "impresence_connections");
    cr_assert_eq(r->stats[1]->value, 0.5);
    mpim__stats_resp__free_unpacked(r, NULL);
    free(out);
    request_reset(&req);
    cr_assert_null(req.packed);
    expect_no_leaks();
}

/* Without a packed message (collecting the stats failed) the reply is the bare Result. */
Test(codec, stats_error_reply)
{
    struct pr_request req;
    req_init(&req, PR_METHOD_STATS);
    cr_assert_eq(codec_decode_request(&req, (const uint8_t *)"", 0, MAX_MSG, DIALECT_SEED), 0);
    request_set_result(&req, MPIM__CODE__INTERNAL, "out of memory");
    uint8_t *frame;
    size_t len;
    const uint8_t *body = encode(&req, &frame, &len);
    Mpim__StatsResp *r = mpim__stats_resp__unpack(NULL, len, body);
    cr_assert_not_null(r);
    cr_assert_not_null(r->result);
    cr_assert_eq(r->result->code, MPIM__CODE__INTERNAL);
    cr_assert_str_eq(r->result->msg, "out of memory");
    cr_assert_eq(r->n_stats, 0);
    mpim__stats_resp__free_unpacked(r, NULL);
    Mpim__ErrorResp *e = mpim__error_resp__unpack(NULL, len, body);
    cr_assert_not_null(e);
    cr_assert_eq(e->result->code, MPIM__CODE__INTERNAL);
    mpim__error_resp__free_unpacked(e, NULL);
    free(frame);
    request_reset(&req);
    expect_no_leaks();
}

/* Result.msg is a proto3 `string`: C++, Go, Java and Python protobuf refuse to parse a reply
 * whose msg is not valid UTF-8. A client that sends a method name with arbitrary bytes must
 * still get a reply it can decode. Disabled until codec_lookup sanitises what it echoes. */
static bool valid_utf8(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80             ? 0
                : (*p & 0xe0) == 0xc0 ? 1
                : (*p & 0xf0) == 0xe0 ? 2
                : (*p & 0xf8) == 0xf0 ? 3
                                      : -1;
        if (n < 0 || (n == 1 && *p < 0xc2))
            return false;
        p++;
        for (int i = 0; i < n; i++, p++)
            if ((*p & 0xc0) != 0x80)
                return false;
    }
    return true;
}

Test(codec, unknown_name_echo_is_valid_utf8)
{
    struct pr_request req;
    req_init(&req, 0);
    ProtobufCBinaryData sv = bin("PresenceService");
    ProtobufCBinaryData me = {3, (uint8_t *)"\xff\xfe\x80"};
    cr_assert_eq(codec_lookup(&sv, &me, &req), -1);
    cr_assert(valid_utf8(req.msg), "msg is not UTF-8: a proto3 client cannot decode the reply");

    /* A 64-byte clip must not cut a multi-byte character in half either. */
    char name[80];
    name[0] = 'a'; /* odd length before the clip: it lands mid-character */
    for (int i = 0; i < 39; i++)
        memcpy(name + 1 + 2 * i, "\xc3\xa9", 2); /* e-acute */
    name[79] = '\0';
    ProtobufCBinaryData me2 = bin(name);
    req_init(&req, 0);
    cr_assert_eq(codec_lookup(&sv, &me2, &req), -1);
    cr_assert(valid_utf8(req.msg), "clipped msg is not UTF-8");
    expect_no_leaks();
}

Test(codec, valid_utf8_helper)
{
    /* Keep the helper of the disabled test honest. */
    cr_assert(valid_utf8("plain"));
    cr_assert(valid_utf8("\xc3\xa9t\xc3\xa9"));
    cr_assert_not(valid_utf8("\xff"));
    cr_assert_not(valid_utf8("\xc3"));
    cr_assert_not(valid_utf8("\xa9"));
    expect_no_leaks();
}

/* §9: with dialect = mpim a Deliver's payload is field 3 (MPIM's DeliveReq { to = 1; payload = 3 }),
 * bytes exact; field 2 (the design's message) is not it. */
Test(codec, mpim_dialect_takes_the_deliver_payload_from_field_3)
{
    static const uint8_t args[] = {0x08, 42, 0x12, 1, 'm', 0x1a, 4, 'p', 0, 0xff, 'q'};
    struct pr_request req;
    memset(&req, 0, sizeof(req));
    req.method = PR_METHOD_DELIVER;
    cr_assert_eq(codec_decode_request(&req, args, sizeof(args), MAX_MSG, DIALECT_MPIM), 0, "%s", req.msg);
    cr_assert_eq(req.user_id, 42);
    cr_assert_eq(req.message.len, 4);
    cr_assert_eq(memcmp(req.message.data, "p\0\xffq", 4), 0);
    request_reset(&req);
    memset(&req, 0, sizeof(req));
    req.method = PR_METHOD_DELIVER;
    cr_assert_eq(codec_decode_request(&req, args, sizeof(args), MAX_MSG, DIALECT_SEED), 0, "%s", req.msg);
    cr_assert_eq(req.message.len, 1, "seed: field 2");
    request_reset(&req);
    expect_no_leaks();
}

/* ---- §8: GatewayHeartbeat and DrainGateway name a gateway, no user ---- */

static bool bytes_is(ProtobufCBinaryData b, const char *s)
{
    return b.len == strlen(s) && memcmp(b.data, s, b.len) == 0;
}

/* Decode a GatewayHeartbeatReq (or, lease_ms < 0, a DrainGatewayReq) of gw. */
static int decode_gateway_call(struct pr_request *req, const void *gw, size_t gw_len, int32_t lease_ms)
{
    Mpim__GatewayHeartbeatReq hb = MPIM__GATEWAY_HEARTBEAT_REQ__INIT;
    Mpim__DrainGatewayReq dr = MPIM__DRAIN_GATEWAY_REQ__INIT;
    hb.gateway_addr = dr.gateway_addr = (ProtobufCBinaryData){gw_len, (uint8_t *)gw};
    hb.lease_ms = lease_ms;
    const ProtobufCMessage *m = lease_ms >= 0 ? &hb.base : &dr.base;
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    cr_assert_not_null(buf);
    protobuf_c_message_pack(m, buf);
    req_init(req, lease_ms >= 0 ? PR_METHOD_GATEWAY_HEARTBEAT : PR_METHOD_DRAIN_GATEWAY);
    int rc = codec_decode_request(req, buf, len, MAX_MSG, DIALECT_SEED);
    memset(buf, 0xee, len);
    free(buf);
    return rc;
}

Test(codec, gateway_calls_decode_without_a_user)
{
    struct pr_request req;
    cr_assert_eq(decode_gateway_call(&req, "gw-1:7000", 9, 1000), 0, "%s", req.msg);
    cr_assert(bytes_is(req.gateway, "gw-1:7000"));
    cr_assert_eq(req.lease_ms, 1000);
    cr_assert_eq(req.user_id, 0);
    request_reset(&req);
    cr_assert_eq(decode_gateway_call(&req, "gw-1:7000", 9, 600000), 0, "%s", req.msg);
    request_reset(&req);
    cr_assert_eq(decode_gateway_call(&req, "g", 1, -1), 0, "%s", req.msg);
    cr_assert_eq(req.method, PR_METHOD_DRAIN_GATEWAY);
    cr_assert(bytes_is(req.gateway, "g"));
    request_reset(&req);
    expect_no_leaks();
}

Test(codec, gateway_calls_invalid_lease_and_gateway_name_the_field)
{
    const int32_t bad_leases[] = {0, 999, 600001, INT32_MAX};
    for (size_t i = 0; i < sizeof(bad_leases) / sizeof(bad_leases[0]); i++) {
        struct pr_request req;
        cr_assert_eq(decode_gateway_call(&req, "gw", 2, bad_leases[i]), -1, "lease_ms %d", bad_leases[i]);
        cr_assert_eq(req.code, MPIM__CODE__INVALID);
        cr_assert_not_null(strstr(req.msg, "lease_ms"), "msg '%s'", req.msg);
        request_reset(&req);
    }
    char long_gw[256];
    memset(long_gw, 'g', sizeof(long_gw));
    const struct {
        const char *gw;
        size_t len;
    } bad_gws[] = {{"", 0}, {"gw\x01", 3}, {"gw\x7f", 3}, {long_gw, 256}, {"g\0w", 3}};
    for (int32_t lease = -1; lease <= 1000; lease += 1001) {
        for (size_t i = 0; i < sizeof(bad_gws) / sizeof(bad_gws[0]); i++) {
            struct pr_request req;
            cr_assert_eq(decode_gateway_call(&req, bad_gws[i].gw, bad_gws[i].len, lease), -1, "case %zu", i);
            cr_assert_eq(req.code, MPIM__CODE__INVALID);
            cr_assert_not_null(strstr(req.msg, "gateway_addr"), "msg '%s'", req.msg);
            request_reset(&req);
        }
    }
    struct pr_request req;
    cr_assert_eq(decode_gateway_call(&req, long_gw, 255, 5000), 0, "255 bytes is the limit");
    request_reset(&req);
    expect_no_leaks();
}

Test(codec, gateway_calls_encode_their_numbers)
{
    struct pr_request req;
    cr_assert_eq(decode_gateway_call(&req, "gw", 2, 5000), 0);
    request_set_result(&req, MPIM__CODE__OK, NULL);
    req.count = 1764460000123;
    uint8_t *frame;
    size_t len;
    const uint8_t *body = encode(&req, &frame, &len);
    Mpim__GatewayHeartbeatResp *h = mpim__gateway_heartbeat_resp__unpack(NULL, len, body);
    cr_assert_not_null(h);
    cr_assert_eq(h->result->code, MPIM__CODE__OK);
    cr_assert_eq(h->expires_ms, 1764460000123);
    mpim__gateway_heartbeat_resp__free_unpacked(h, NULL);
    free(frame);
    request_reset(&req);

    cr_assert_eq(decode_gateway_call(&req, "gw", 2, -1), 0);
    request_set_result(&req, MPIM__CODE__OK, "3 route notices not published");
    req.count = 100000;
    body = encode(&req, &frame, &len);
    Mpim__DrainGatewayResp *d = mpim__drain_gateway_resp__unpack(NULL, len, body);
    cr_assert_not_null(d);
    cr_assert_eq(d->sessions_removed, 100000);
    cr_assert_str_eq(d->result->msg, "3 route notices not published");
    mpim__drain_gateway_resp__free_unpacked(d, NULL);
    free(frame);
    request_reset(&req);
    expect_no_leaks();
}
