/* libFuzzer target: untrusted bytes from a client socket, as the acceptor sees them.
 *
 * Input: 3 control bytes, then the byte stream.
 *   [0] max_frame_bytes = 64 + 16 * b   (small limits reach FRAME_ERR_TOO_BIG often)
 *   [1] seed of the read sizes the stream is split into
 *   [2] max_message_bytes = 8 * (b & 63); bits 6-7 pick the pretend shard's answer
 *
 * The stream is parsed twice: whole, and fed in random chunks through an exact-size heap buffer
 * the way the acceptor reads a socket (ASan catches any read past what has "arrived"). Both must
 * yield the same frames and the same final status. Every whole frame is then looked up, decoded,
 * validated, answered and encoded, and the response must parse back. */
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

#define MAX_FRAMES 4096

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);                         \
            abort();                                                                                         \
        }                                                                                                    \
    } while (0)

struct outcome {
    size_t frame_lens[MAX_FRAMES]; /* FRAME_OK frames, in order */
    size_t nframes;
    int last; /* FRAME_AGAIN at the end of input, or the error that stopped parsing */
};


/* What the acceptor does for Stats: pack the whole response itself. */
static void pack_stats(struct pr_request *req, size_t n)
{
    Mpim__Result result = MPIM__RESULT__INIT;
    static char name[] = "impresence_requests_total{method=\"Stats\",code=\"OK\"}"; /* protobuf-c: char * */
    Mpim__Stat items[4], *ptrs[4];
    for (size_t i = 0; i < n && i < 4; i++) {
        mpim__stat__init(&items[i]);
        items[i].name = name;
        items[i].value = (double)i;
        ptrs[i] = &items[i];
    }
    Mpim__StatsResp resp = MPIM__STATS_RESP__INIT;
    resp.result = &result;
    resp.n_stats = n < 4 ? n : 4;
    resp.stats = ptrs;
    req->packed_len = mpim__stats_resp__get_packed_size(&resp);
    req->packed = malloc(req->packed_len ? req->packed_len : 1);
    CHECK(req->packed != NULL);
    CHECK(mpim__stats_resp__pack(&resp, req->packed) == req->packed_len);
    request_set_result(req, MPIM__CODE__OK, NULL);
}

/* What the acceptor and a shard do with one whole frame. */
static void serve(const struct frame_request *fr, size_t max_msg, uint8_t answer)
{
    struct pr_request req;
    memset(&req, 0, sizeof(req));
    int m = codec_lookup(&fr->header->service_name, &fr->header->method_name, &req);
    if (m < 0) {
        CHECK(req.code == MPIM__CODE__INVALID);
    } else {
        CHECK(m < PR_METHOD_COUNT);
        req.method = (uint8_t)m;
        if (codec_decode_request(&req, fr->args, fr->args_len, max_msg, DIALECT_SEED) != 0) {
            CHECK(req.code == MPIM__CODE__INVALID);
            CHECK(req.msg[0] != '\0');
        } else if (m == PR_METHOD_STATS) {
            CHECK(req.args != NULL);
            if (answer != 3)
                pack_stats(&req, answer);
            else
                request_set_result(&req, MPIM__CODE__INTERNAL, "too many stats");
        } else if (m == PR_METHOD_BATCH_QUERY || m == PR_METHOD_BATCH_DELIVER) {
            /* Scattered and gathered by the acceptor (core/batch.h): here only its result. */
            CHECK(req.args != NULL);
            CHECK(m == PR_METHOD_BATCH_QUERY || req.message.len <= max_msg);
            request_set_result(&req, MPIM__CODE__OK, NULL);
        } else if (m == PR_METHOD_GATEWAY_HEARTBEAT || m == PR_METHOD_DRAIN_GATEWAY) {
            /* §8: a gateway, no user; run on the gateway's shard. */
            CHECK(req.args != NULL);
            CHECK(codec_check_gateway(req.gateway.data, req.gateway.len) == NULL);
            CHECK(m == PR_METHOD_DRAIN_GATEWAY || (req.lease_ms >= 1000 && req.lease_ms <= 600000));
            req.count = answer;
            request_set_result(&req, MPIM__CODE__OK, NULL);
        } else {
            CHECK(req.args != NULL);
            CHECK(req.user_id > 0);
            if (m == PR_METHOD_BIND || m == PR_METHOD_UNBIND || m == PR_METHOD_HEARTBEAT)
                CHECK(codec_check_gateway(req.gateway.data, req.gateway.len) == NULL);
            if (m == PR_METHOD_DELIVER)
                CHECK(req.message.len <= max_msg);
            /* A pretend shard answer. */
            req.code = (uint8_t)(answer % 3 == 0   ? MPIM__CODE__OK
                                 : answer % 3 == 1 ? MPIM__CODE__NOT_FOUND
                                                   : MPIM__CODE__UNAVAILABLE);
            req.flag = answer & 1;
            req.timestamp = (int64_t)fr->frame_len * 1000;
            if (m == PR_METHOD_QUERY && req.code == MPIM__CODE__OK) {
                req.route = malloc(fr->args_len + 1);
                CHECK(req.route != NULL);
                memcpy(req.route, fr->args, fr->args_len);
                req.route_len = fr->args_len;
            }
        }
    }

    size_t n = codec_response_size(&req);
    CHECK(codec_response_bound(&req) >= n); /* the acceptor reserves only the bound */
    uint8_t *out = malloc(n);
    CHECK(out != NULL);
    CHECK(codec_encode_response(&req, out) == n);
    const uint8_t *body;
    size_t body_len, frame_len;
    CHECK(frame_parse_response(out, n, SIZE_MAX, &body, &body_len, &frame_len) == FRAME_OK);
    CHECK(frame_len == n);
    /* Every reply decodes as ErrorResp (contract §1: result is field 1 of every response). */
    Mpim__ErrorResp *e = mpim__error_resp__unpack(NULL, body_len, body);
    CHECK(e != NULL && e->result != NULL);
    CHECK((int)e->result->code == req.code);
    CHECK(strcmp(e->result->msg, req.msg) == 0);
    mpim__error_resp__free_unpacked(e, NULL);
    /* ... and as the response type of the method the client thinks it called. */
    int as = m >= 0 ? m : answer % PR_METHOD_COUNT;
    ProtobufCMessage *r = protobuf_c_message_unpack(codec_response_descriptor(as), NULL, body_len, body);
    CHECK(r != NULL);
    protobuf_c_message_free_unpacked(r, NULL);
    free(out);
    request_reset(&req);
}

/* Parse everything in one buffer. */
static void parse_whole(const uint8_t *data, size_t size, size_t max_frame, struct outcome *o)
{
    size_t off = 0;
    o->nframes = 0;
    for (;;) {
        struct frame_request fr;
        int rc = frame_parse_request(data + off, size - off, max_frame, &fr);
        if (rc != FRAME_OK) {
            o->last = rc;
            frame_request_done(&fr);
            return;
        }
        CHECK(fr.frame_len >= FRAME_PREFIX && fr.frame_len <= size - off);
        CHECK(fr.frame_len - FRAME_PREFIX <= max_frame);
        CHECK(fr.args + fr.args_len == data + off + fr.frame_len);
        CHECK(o->nframes < MAX_FRAMES);
        o->frame_lens[o->nframes++] = fr.frame_len;
        frame_request_done(&fr);
        off += fr.frame_len;
    }
}

/* Feed the stream in chunks, like socket reads, serving each whole frame. */
static void parse_chunked(const uint8_t *data, size_t size, size_t max_frame, uint32_t seed, size_t max_msg,
                          uint8_t answer, struct outcome *o)
{
    uint8_t *acc = NULL; /* received, not yet consumed bytes: exactly `have` of them */
    size_t have = 0, fed = 0;
    uint32_t x = seed * 2654435761u + 1;
    o->nframes = 0;
    o->last = FRAME_AGAIN;
    while (fed < size) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        size_t chunk = (x & 0x300) == 0 ? 1 + (x % 1024) : 1 + (x % 16);
        if (chunk > size - fed)
            chunk = size - fed;
        uint8_t *next = malloc(have + chunk);
        CHECK(next != NULL);
        if (have > 0)
            memcpy(next, acc, have);
        memcpy(next + have, data + fed, chunk);
        free(acc);
        acc = next;
        have += chunk;
        fed += chunk;

        size_t off = 0;
        for (;;) {
            struct frame_request fr;
            int rc = frame_parse_request(acc + off, have - off, max_frame, &fr);
            if (rc == FRAME_AGAIN) {
                CHECK(fr.frame_len == 0 || fr.frame_len > have - off);
                CHECK(fr.frame_len == 0 || fr.frame_len - FRAME_PREFIX <= max_frame);
                break;
            }
            if (rc != FRAME_OK) { /* the acceptor closes the connection */
                o->last = rc;
                free(acc);
                return;
            }
            CHECK(o->nframes < MAX_FRAMES);
            o->frame_lens[o->nframes++] = fr.frame_len;
            serve(&fr, max_msg, answer);
            frame_request_done(&fr);
            off += fr.frame_len;
        }
        /* Keep only the unconsumed tail, in an exact-size buffer. */
        if (off > 0) {
            uint8_t *rest = have - off > 0 ? malloc(have - off) : NULL;
            if (rest != NULL)
                memcpy(rest, acc + off, have - off);
            free(acc);
            acc = rest;
            have -= off;
        }
    }
    free(acc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct outcome whole, chunked;
    if (size < 3)
        return 0;
    size_t max_frame = 64 + (size_t)data[0] * 16;
    uint32_t seed = data[1];
    size_t max_msg = (size_t)(data[2] & 63) * 8;
    uint8_t answer = data[2] >> 6;
    data += 3;
    size -= 3;

    parse_whole(data, size, max_frame, &whole);
    parse_chunked(data, size, max_frame, seed, max_msg, answer, &chunked);
    CHECK(whole.nframes == chunked.nframes);
    for (size_t i = 0; i < whole.nframes; i++)
        CHECK(whole.frame_lens[i] == chunked.frame_lens[i]);
    CHECK(whole.last == chunked.last);
    return 0;
}
