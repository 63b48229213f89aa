/* libFuzzer target: request args (the bytes after the RpcHeader) for every method.
 *
 * Input: 2 control bytes, then the args.
 *   [0] the pretend shard's answer: code (b % 6), flag (bit 3), route for QueryRoute (bit 4)
 *   [1] max_message_bytes = 4 * b
 *
 * For each method the args are decoded and validated; an accepted request must satisfy the
 * contract's rules, a refused one must name the field. The answer is encoded and decoded back
 * as the method's response type, field by field. */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/config.h"
#include "core/frame.h"
#include "core/request.h"
#include "presence.pb-c.h"

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                         \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

static void check_response(const struct pr_request *req, const uint8_t *body, size_t len)
{
    Mpim__ErrorResp *e = mpim__error_resp__unpack(NULL, len, body);
    CHECK(e != NULL && e->result != NULL);
    CHECK((int)e->result->code == req->code);
    CHECK(strcmp(e->result->msg, req->msg) == 0);
    mpim__error_resp__free_unpacked(e, NULL);

    switch (req->method) {
    case PR_METHOD_BIND: {
        Mpim__BindRouteResp *r = mpim__bind_route_resp__unpack(NULL, len, body);
        CHECK(r != NULL && r->result != NULL);
        if (req->args != NULL && req->code == MPIM__CODE__OK) {
            /* The shard names the key in route (run_one does as a shard would). */
            char want[64];
            snprintf(want, sizeof(want), "user:route:%" PRId64, req->user_id);
            CHECK(strcmp(r->route_key, want) == 0);
        } else {
            CHECK(r->route_key[0] == '\0');
        }
        mpim__bind_route_resp__free_unpacked(r, NULL);
        break;
    }
    case PR_METHOD_QUERY: {
        Mpim__QueryRouteResp *r = mpim__query_route_resp__unpack(NULL, len, body);
        CHECK(r != NULL && r->result != NULL);
        size_t want = req->args != NULL && req->route != NULL ? req->route_len : 0;
        CHECK(r->gateway_addr.len == want);
        CHECK(want == 0 || memcmp(r->gateway_addr.data, req->route, want) == 0);
        CHECK(r->is_online == (req->args != NULL && req->flag));
        mpim__query_route_resp__free_unpacked(r, NULL);
        break;
    }
    case PR_METHOD_DELIVER: {
        Mpim__DeliverResp *r = mpim__deliver_resp__unpack(NULL, len, body);
        CHECK(r != NULL && r->result != NULL);
        CHECK(r->delivered == (req->args != NULL && req->flag));
        CHECK(r->timestamp == (req->args != NULL ? req->timestamp : 0));
        mpim__deliver_resp__free_unpacked(r, NULL);
        break;
    }
    case PR_METHOD_UNBIND: {
        Mpim__UnbindRouteResp *r = mpim__unbind_route_resp__unpack(NULL, len, body);
        CHECK(r != NULL && r->result != NULL);
        CHECK(r->unbound == (req->args != NULL && req->flag));
        mpim__unbind_route_resp__free_unpacked(r, NULL);
        break;
    }
    case PR_METHOD_BATCH_QUERY: {
        Mpim__BatchQueryRouteResp *r = mpim__batch_query_route_resp__unpack(NULL, len, body);
        CHECK(r != NULL && r->result != NULL);
        CHECK(r->n_routes == 0); /* entries come only in a gathered answer, packed by the acceptor */
        mpim__batch_query_route_resp__free_unpacked(r, NULL);
        break;
    }
    case PR_METHOD_BATCH_DELIVER: {
        Mpim__BatchDeliverResp *r = mpim__batch_deliver_resp__unpack(NULL, len, body);
        CHECK(r != NULL && r->result != NULL);
        CHECK(r->n_results == 0);
        CHECK(r->timestamp == (req->args != NULL ? req->timestamp : 0));
        mpim__batch_deliver_resp__free_unpacked(r, NULL);
        break;
    }
    case PR_METHOD_GATEWAY_HEARTBEAT: {
        Mpim__GatewayHeartbeatResp *r = mpim__gateway_heartbeat_resp__unpack(NULL, len, body);
        CHECK(r != NULL && r->result != NULL);
        CHECK(r->expires_ms == (req->args != NULL ? req->count : 0));
        mpim__gateway_heartbeat_resp__free_unpacked(r, NULL);
        break;
    }
    case PR_METHOD_DRAIN_GATEWAY: {
        Mpim__DrainGatewayResp *r = mpim__drain_gateway_resp__unpack(NULL, len, body);
        CHECK(r != NULL && r->result != NULL);
        CHECK(r->sessions_removed == (req->args != NULL ? req->count : 0));
        mpim__drain_gateway_resp__free_unpacked(r, NULL);
        break;
    }
    case PR_METHOD_STATS: {
        Mpim__StatsResp *r = mpim__stats_resp__unpack(NULL, len, body);
        CHECK(r != NULL && r->result != NULL);
        CHECK(r->n_stats == (req->packed != NULL ? 1u : 0u));
        CHECK(r->n_stats == 0 || strcmp(r->stats[0]->name, "impresence_up") == 0);
        mpim__stats_resp__free_unpacked(r, NULL);
        break;
    }
    default: {
        Mpim__HeartbeatResp *r = mpim__heartbeat_resp__unpack(NULL, len, body);
        CHECK(r != NULL && r->result != NULL);
        CHECK(r->refreshed == (req->args != NULL && req->flag));
        mpim__heartbeat_resp__free_unpacked(r, NULL);
        break;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t knobs = data[0];
    size_t max_msg = (size_t)data[1] * 4;
    /* An exact-size copy, so that ASan sees any read past the args. */
    size_t len = size - 2;
    uint8_t *args = malloc(len > 0 ? len : 1);
    CHECK(args != NULL);
    memcpy(args, data + 2, len);

    for (int m = 0; m < PR_METHOD_COUNT; m++) {
        struct pr_request req;
        memset(&req, 0, sizeof(req));
        req.method = (uint8_t)m;
        bool gateway_call = m == PR_METHOD_GATEWAY_HEARTBEAT || m == PR_METHOD_DRAIN_GATEWAY; /* §8: no user */
        bool gw = m == PR_METHOD_BIND || m == PR_METHOD_UNBIND || m == PR_METHOD_HEARTBEAT || gateway_call;
        int rc = codec_decode_request(&req, args, len, max_msg, DIALECT_SEED);
        if (rc == 0 && m == PR_METHOD_STATS) {
            /* Stats names no user: nothing to validate; the acceptor packs the answer. */
            CHECK(req.args != NULL);
            if (knobs & 0x10) {
                Mpim__Result result = MPIM__RESULT__INIT;
                Mpim__Stat stat = MPIM__STAT__INIT, *ptr = &stat;
                static char up[] = "impresence_up"; /* protobuf-c strings are char * */
                stat.name = up;
                stat.value = 1;
                Mpim__StatsResp resp = MPIM__STATS_RESP__INIT;
                resp.result = &result;
                resp.n_stats = 1;
                resp.stats = &ptr;
                req.packed_len = mpim__stats_resp__get_packed_size(&resp);
                req.packed = malloc(req.packed_len);
                CHECK(req.packed != NULL);
                mpim__stats_resp__pack(&resp, req.packed);
                request_set_result(&req, MPIM__CODE__OK, NULL);
            } else {
                request_set_result(&req, MPIM__CODE__INTERNAL, "out of memory");
            }
        } else if (rc == 0 && (m == PR_METHOD_BATCH_QUERY || m == PR_METHOD_BATCH_DELIVER)) {
            /* Its ids are judged one by one, its size and answer by the acceptor (core/batch.h). */
            CHECK(req.args != NULL);
            CHECK(m == PR_METHOD_BATCH_QUERY || req.message.len <= max_msg);
            req.timestamp = (int64_t)len * 7 + 1;
            request_set_result(&req, knobs % 6, NULL);
        } else if (rc == 0 && gateway_call) {
            CHECK(req.args != NULL);
            CHECK(req.gateway.len >= 1 && req.gateway.len <= 255);
            for (size_t i = 0; i < req.gateway.len; i++)
                CHECK(req.gateway.data[i] >= 0x20 && req.gateway.data[i] < 0x7f);
            CHECK(m == PR_METHOD_DRAIN_GATEWAY || (req.lease_ms >= 1000 && req.lease_ms <= 600000));
            req.count = (int64_t)len * 1000003 - (int64_t)knobs; /* expires_ms / sessions_removed */
            request_set_result(&req, knobs % 6, (knobs & 0x20) ? "answer" : NULL);
        } else if (rc == 0) {
            CHECK(req.args != NULL);
            CHECK(req.code == MPIM__CODE__OK);
            CHECK(req.user_id > 0);
            if (gw) {
                CHECK(req.gateway.len >= 1 && req.gateway.len <= 255);
                for (size_t i = 0; i < req.gateway.len; i++)
                    CHECK(req.gateway.data[i] >= 0x20 && req.gateway.data[i] < 0x7f); /* printable ASCII */
            }
            if (m == PR_METHOD_DELIVER)
                CHECK(req.message.len <= max_msg);
            /* Pointers into the decoded message, never into our buffer. */
            CHECK(req.gateway.len == 0 || req.gateway.data < args || req.gateway.data >= args + len);
            req.flag = (knobs >> 3) & 1;
            req.timestamp = (int64_t)len * 7 + 1;
            if (m == PR_METHOD_QUERY && (knobs & 0x10)) {
                req.route = malloc(len + 1);
                CHECK(req.route != NULL);
                memcpy(req.route, args, len);
                req.route_len = len;
            }
            if (m == PR_METHOD_BIND) { /* BindRouteResp.route_key, as writes.c sets it */
                int n = snprintf(req.route_inline, sizeof(req.route_inline), "user:route:%" PRId64, req.user_id);
                req.route = req.route_inline;
                req.route_len = (size_t)n;
            }
            if (knobs & 0x20)
                request_set_result(&req, knobs % 6, "answer %d", knobs);
            else
                request_set_result(&req, knobs % 6, NULL);
        } else {
            CHECK(req.code == MPIM__CODE__INVALID);
            if (req.args == NULL) {
                CHECK(strstr(req.msg, "args do not parse") != NULL);
            } else {
                /* Validation: the message names the field (contract §3). */
                CHECK(strstr(req.msg, "user_id") != NULL || (gw && strstr(req.msg, "gateway_addr") != NULL) ||
                      strstr(req.msg, "device_id") != NULL || strstr(req.msg, "platform") != NULL ||
                      (m == PR_METHOD_GATEWAY_HEARTBEAT && strstr(req.msg, "lease_ms") != NULL) ||
                      ((m == PR_METHOD_DELIVER || m == PR_METHOD_BATCH_DELIVER) && strstr(req.msg, "message") != NULL));
            }
        }

        size_t n = codec_response_size(&req);
        CHECK(codec_response_bound(&req) >= n); /* the acceptor reserves only the bound */
        uint8_t *out = malloc(n);
        CHECK(out != NULL);
        CHECK(codec_encode_response(&req, out) == n);
        CHECK(frame_get_u32le(out) == n - FRAME_PREFIX);
        check_response(&req, out + FRAME_PREFIX, n - FRAME_PREFIX);
        free(out);
        request_reset(&req);
    }
    free(args);
    return 0;
}
