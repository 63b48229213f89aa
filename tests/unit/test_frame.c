/* core/frame: mprpc request and response framing (contract §1). */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/frame.h"
#include "core/request.h"
#include "leak.h"
#include "presence.pb-c.h"

#define MAX_FRAME (1u << 20)

/* A malloc'd request frame built by frame_write_request; *len gets its size. */
static uint8_t *make_frame(const char *service, const char *method, const uint8_t *args, size_t args_len,
                           size_t *len)
{
    size_t n = frame_request_size(service, method, args_len);
    uint8_t *buf = malloc(n);
    cr_assert_not_null(buf);
    size_t w = frame_write_request(buf, service, method, args, args_len);
    cr_assert_eq(w, n, "frame_write_request wrote %zu bytes, frame_request_size said %zu", w, n);
    *len = n;
    return buf;
}

/* A frame whose RpcHeader is packed from h as given (args_size may lie about what follows). */
static size_t make_raw_frame(uint8_t *out, const Mpim__RpcHeader *h, const uint8_t *args, size_t args_len)
{
    size_t hlen = mpim__rpc_header__pack(h, out + FRAME_PREFIX);
    frame_put_u32le(out, (uint32_t)hlen);
    if (args_len > 0)
        memcpy(out + FRAME_PREFIX + hlen, args, args_len);
    return FRAME_PREFIX + hlen + args_len;
}

static bool bytes_is(const ProtobufCBinaryData *b, const char *s)
{
    return b->len == strlen(s) && (b->len == 0 || memcmp(b->data, s, b->len) == 0);
}

/* Parse the first `len` bytes of buf from an exact-size heap copy, so ASan catches any read
 * past what has "arrived". */
static int parse_prefix(const uint8_t *buf, size_t len, size_t max, struct frame_request *fr, uint8_t **copy)
{
    *copy = malloc(len > 0 ? len : 1);
    cr_assert_not_null(*copy);
    if (len > 0)
        memcpy(*copy, buf, len);
    return frame_parse_request(*copy, len, max, fr);
}

static const uint8_t sample_args[] = {0x08, 0x2a, 0x12, 0x05, 'g', 'w', ':', '9', '0'};

Test(frame, whole_frame_parses)
{
    size_t n;
    uint8_t *buf = make_frame("PresenceService", "BindRoute", sample_args, sizeof(sample_args), &n);
    struct frame_request fr;
    cr_assert_eq(frame_parse_request(buf, n, MAX_FRAME, &fr), FRAME_OK);
    cr_assert_eq(fr.frame_len, n);
    cr_assert_not_null(fr.header);
    cr_assert(bytes_is(&fr.header->service_name, "PresenceService"));
    cr_assert(bytes_is(&fr.header->method_name, "BindRoute"));
    cr_assert_eq(fr.header->args_size, sizeof(sample_args));
    cr_assert_eq(fr.args_len, sizeof(sample_args));
    cr_assert_eq(fr.args, buf + n - sizeof(sample_args), "args must point into the caller's buffer");
    cr_assert_eq(memcmp(fr.args, sample_args, sizeof(sample_args)), 0);
    cr_assert_eq(frame_get_u32le(buf), n - FRAME_PREFIX - sizeof(sample_args));
    frame_request_done(&fr);
    cr_assert_null(fr.header);
    frame_request_done(&fr); /* twice is harmless */
    free(buf);
    expect_no_leaks();
}

Test(frame, frame_without_args)
{
    size_t n;
    uint8_t *buf = make_frame("mpim.PresenceService", "QueryRoute", NULL, 0, &n);
    struct frame_request fr;
    cr_assert_eq(frame_parse_request(buf, n, MAX_FRAME, &fr), FRAME_OK);
    cr_assert_eq(fr.frame_len, n);
    cr_assert_eq(fr.args_len, 0);
    cr_assert(bytes_is(&fr.header->service_name, "mpim.PresenceService"));
    frame_request_done(&fr);
    free(buf);
    expect_no_leaks();
}

Test(frame, split_at_every_byte_boundary)
{
    uint8_t args[300];
    for (size_t i = 0; i < sizeof(args); i++)
        args[i] = (uint8_t)(i * 7);
    size_t n;
    uint8_t *buf = make_frame("PresenceService", "Deliver", args, sizeof(args), &n);
    size_t hlen = frame_get_u32le(buf);

    for (size_t k = 0; k < n; k++) {
        struct frame_request fr;
        uint8_t *copy;
        int rc = parse_prefix(buf, k, MAX_FRAME, &fr, &copy);
        cr_assert_eq(rc, FRAME_AGAIN, "prefix of %zu/%zu bytes: rc %d", k, n, rc);
        cr_assert_null(fr.header);
        if (k < FRAME_PREFIX + hlen)
            cr_assert_eq(fr.frame_len, 0, "header incomplete at %zu: frame_len must be unknown", k);
        else
            cr_assert_eq(fr.frame_len, n, "header known at %zu: frame_len %zu, want %zu", k, fr.frame_len, n);
        frame_request_done(&fr);
        free(copy);
    }
    struct frame_request fr;
    uint8_t *copy;
    cr_assert_eq(parse_prefix(buf, n, MAX_FRAME, &fr, &copy), FRAME_OK);
    cr_assert_eq(fr.frame_len, n);
    cr_assert_eq(fr.args_len, sizeof(args));
    cr_assert_eq(memcmp(fr.args, args, sizeof(args)), 0);
    frame_request_done(&fr);
    free(copy);
    free(buf);
    expect_no_leaks();
}

/* Feed a stream of several frames in chunks of every size from 1 to 9 bytes, as the acceptor
 * would read them, and check that the same frames come out in order. */
Test(frame, incremental_feed_in_small_chunks)
{
    const char *methods[] = {"BindRoute", "QueryRoute", "Deliver", "UnbindRoute", "Heartbeat"};
    uint8_t stream[1024];
    size_t total = 0, lens[5];
    for (int i = 0; i < 5; i++) {
        uint8_t args[16];
        memset(args, 'a' + i, sizeof(args));
        size_t n;
        uint8_t *f = make_frame("PresenceService", methods[i], args, (size_t)i * 3, &n);
        memcpy(stream + total, f, n);
        lens[i] = n;
        total += n;
        free(f);
    }
    for (size_t chunk = 1; chunk <= 9; chunk++) {
        uint8_t acc[1024];
        size_t have = 0, off = 0, fed = 0;
        int got = 0;
        while (fed < total) {
            size_t c = total - fed < chunk ? total - fed : chunk;
            memcpy(acc + have, stream + fed, c);
            have += c;
            fed += c;
            for (;;) {
                struct frame_request fr;
                int rc = frame_parse_request(acc + off, have - off, MAX_FRAME, &fr);
                if (rc == FRAME_AGAIN) {
                    cr_assert(fr.frame_len == 0 || fr.frame_len > have - off);
                    break;
                }
                cr_assert_eq(rc, FRAME_OK, "chunk %zu: rc %d", chunk, rc);
                cr_assert_lt(got, 5);
                cr_assert_eq(fr.frame_len, lens[got]);
                cr_assert(bytes_is(&fr.header->method_name, methods[got]));
                cr_assert_eq(fr.args_len, (size_t)got * 3);
                frame_request_done(&fr);
                off += fr.frame_len;
                got++;
            }
        }
        cr_assert_eq(got, 5, "chunk %zu: %d frames", chunk, got);
        cr_assert_eq(off, total);
    }
    expect_no_leaks();
}

Test(frame, back_to_back_frames_in_one_buffer)
{
    uint8_t buf[512];
    size_t total = 0;
    const char *methods[] = {"BindRoute", "Heartbeat", "QueryRoute"};
    for (int i = 0; i < 3; i++) {
        uint8_t args[8];
        memset(args, i + 1, sizeof(args));
        total += frame_write_request(buf + total, "PresenceService", methods[i], args, (size_t)(i + 1) * 2);
    }
    size_t off = 0;
    for (int i = 0; i < 3; i++) {
        struct frame_request fr;
        cr_assert_eq(frame_parse_request(buf + off, total - off, MAX_FRAME, &fr), FRAME_OK);
        cr_assert(bytes_is(&fr.header->method_name, methods[i]));
        cr_assert_eq(fr.args_len, (size_t)(i + 1) * 2);
        cr_assert_eq(fr.args[0], i + 1);
        frame_request_done(&fr);
        off += fr.frame_len;
    }
    cr_assert_eq(off, total);
    struct frame_request fr;
    cr_assert_eq(frame_parse_request(buf + off, 0, MAX_FRAME, &fr), FRAME_AGAIN);
    expect_no_leaks();
}

Test(frame, huge_header_rejected_before_it_arrives)
{
    uint8_t buf[4];
    frame_put_u32le(buf, 4097);
    struct frame_request fr;
    cr_assert_eq(frame_parse_request(buf, 4, 4096, &fr), FRAME_ERR_TOO_BIG);
    frame_request_done(&fr);
    frame_put_u32le(buf, 4096); /* exactly the limit: wait for it */
    cr_assert_eq(frame_parse_request(buf, 4, 4096, &fr), FRAME_AGAIN);
    cr_assert_eq(fr.frame_len, 0);
    expect_no_leaks();
}

Test(frame, length_0x7fffffff)
{
    uint8_t buf[8] = {0};
    frame_put_u32le(buf, 0x7fffffffu);
    struct frame_request fr;
    cr_assert_eq(frame_parse_request(buf, sizeof(buf), MAX_FRAME, &fr), FRAME_ERR_TOO_BIG);
    frame_put_u32le(buf, 0xffffffffu);
    cr_assert_eq(frame_parse_request(buf, sizeof(buf), MAX_FRAME, &fr), FRAME_ERR_TOO_BIG);
    /* With no limit to speak of, it is simply incomplete. */
    cr_assert_eq(frame_parse_request(buf, sizeof(buf), SIZE_MAX / 2, &fr), FRAME_AGAIN);
    cr_assert_eq(fr.frame_len, 0);
    expect_no_leaks();
}

Test(frame, header_plus_args_over_limit)
{
    Mpim__RpcHeader h = MPIM__RPC_HEADER__INIT;
    h.service_name.data = (uint8_t *)"PresenceService";
    h.service_name.len = 15;
    h.method_name.data = (uint8_t *)"Deliver";
    h.method_name.len = 7;
    uint8_t buf[256];

    h.args_size = 900; /* measure H first, with an args_size varint as long as the ones below */
    size_t hlen = mpim__rpc_header__get_packed_size(&h);
    size_t max = 1000;

    h.args_size = (uint32_t)(max - hlen + 1);
    cr_assert_eq(mpim__rpc_header__get_packed_size(&h), hlen);
    size_t n = make_raw_frame(buf, &h, NULL, 0);
    struct frame_request fr;
    cr_assert_eq(frame_parse_request(buf, n, max, &fr), FRAME_ERR_TOO_BIG,
                 "H + args_size = max + 1 must be refused while only the header is here");
    cr_assert_null(fr.header);

    h.args_size = (uint32_t)(max - hlen); /* exactly the limit */
    n = make_raw_frame(buf, &h, NULL, 0);
    cr_assert_eq(frame_parse_request(buf, n, max, &fr), FRAME_AGAIN);
    cr_assert_eq(fr.frame_len, FRAME_PREFIX + max, "the prefix is not counted in the limit");

    h.args_size = 0xffffffffu; /* no overflow in H + args_size */
    n = make_raw_frame(buf, &h, NULL, 0);
    cr_assert_eq(frame_parse_request(buf, n, MAX_FRAME, &fr), FRAME_ERR_TOO_BIG);
    expect_no_leaks();
}

Test(frame, garbage_header_is_an_error)
{
    struct frame_request fr;
    /* A truncated varint tag. */
    uint8_t a[] = {3, 0, 0, 0, 0xff, 0xff, 0xff};
    cr_assert_eq(frame_parse_request(a, sizeof(a), MAX_FRAME, &fr), FRAME_ERR_HEADER);
    cr_assert_null(fr.header);
    frame_request_done(&fr);
    /* service_name claims 10 bytes, 2 present. */
    uint8_t b[] = {4, 0, 0, 0, 0x0a, 10, 'P', 'r'};
    cr_assert_eq(frame_parse_request(b, sizeof(b), MAX_FRAME, &fr), FRAME_ERR_HEADER);
    /* Wire type 7 does not exist. */
    uint8_t c[] = {2, 0, 0, 0, 0x0f, 0x00};
    cr_assert_eq(frame_parse_request(c, sizeof(c), MAX_FRAME, &fr), FRAME_ERR_HEADER);
    /* Field 0 is invalid. */
    uint8_t d[] = {2, 0, 0, 0, 0x00, 0x00};
    cr_assert_eq(frame_parse_request(d, sizeof(d), MAX_FRAME, &fr), FRAME_ERR_HEADER);
    expect_no_leaks();
}

Test(frame, header_error_waits_for_whole_header)
{
    /* Garbage is only judged once all H bytes are here. */
    uint8_t a[] = {3, 0, 0, 0, 0xff, 0xff};
    struct frame_request fr;
    cr_assert_eq(frame_parse_request(a, sizeof(a), MAX_FRAME, &fr), FRAME_AGAIN);
    expect_no_leaks();
}

Test(frame, empty_header_parses)
{
    uint8_t buf[] = {0, 0, 0, 0, 0xaa};
    struct frame_request fr;
    cr_assert_eq(frame_parse_request(buf, sizeof(buf), MAX_FRAME, &fr), FRAME_OK);
    cr_assert_eq(fr.frame_len, FRAME_PREFIX);
    cr_assert_not_null(fr.header);
    cr_assert_eq(fr.header->service_name.len, 0);
    cr_assert_eq(fr.header->method_name.len, 0);
    cr_assert_eq(fr.args_len, 0);

    /* ... and the empty service name is an ordinary INVALID. */
    struct pr_request req;
    memset(&req, 0, sizeof(req));
    cr_assert_eq(codec_lookup(&fr.header->service_name, &fr.header->method_name, &req), -1);
    cr_assert_eq(req.code, MPIM__CODE__INVALID);
    cr_assert_not_null(strstr(req.msg, "service"));
    frame_request_done(&fr);
    expect_no_leaks();
}

Test(frame, unknown_header_fields_are_skipped)
{
    /* service_name, method_name, field 9 (varint), args_size = 2 */
    uint8_t buf[64];
    size_t h = 0;
    uint8_t *p = buf + FRAME_PREFIX;
    p[h++] = 0x0a, p[h++] = 1, p[h++] = 'S';
    p[h++] = 0x12, p[h++] = 1, p[h++] = 'M';
    p[h++] = 0x48, p[h++] = 0x96, p[h++] = 0x01;
    p[h++] = 0x18, p[h++] = 2;
    frame_put_u32le(buf, (uint32_t)h);
    p[h++] = 0x08, p[h++] = 0x01;
    struct frame_request fr;
    cr_assert_eq(frame_parse_request(buf, FRAME_PREFIX + h, MAX_FRAME, &fr), FRAME_OK);
    cr_assert(bytes_is(&fr.header->service_name, "S"));
    cr_assert(bytes_is(&fr.header->method_name, "M"));
    cr_assert_eq(fr.args_len, 2);
    cr_assert_eq(fr.frame_len, FRAME_PREFIX + h);
    frame_request_done(&fr);
    expect_no_leaks();
}

/* A header too big for the inline arena falls back to malloc; the leak check proves both the
 * OK and the AGAIN paths give it back. (The frame_request is on the heap and freed first, so that
 * a stale pointer left in its arena cannot keep a leak reachable.) */
Test(frame, big_header_falls_back_to_malloc)
{
    char service[600];
    memset(service, 'x', sizeof(service) - 1);
    service[sizeof(service) - 1] = '\0';
    size_t n;
    uint8_t *buf = make_frame(service, "BindRoute", sample_args, sizeof(sample_args), &n);
    struct frame_request *fr = malloc(sizeof(*fr));
    cr_assert_eq(frame_parse_request(buf, n - 1, MAX_FRAME, fr), FRAME_AGAIN);
    cr_assert_eq(fr->frame_len, n);
    cr_assert_eq(frame_parse_request(buf, n, MAX_FRAME, fr), FRAME_OK);
    cr_assert_eq(fr->header->service_name.len, sizeof(service) - 1);
    cr_assert_eq(memcmp(fr->header->service_name.data, service, sizeof(service) - 1), 0);
    cr_assert(fr->header->service_name.data < fr->arena_buf ||
                  fr->header->service_name.data >= fr->arena_buf + sizeof(fr->arena_buf),
              "a 599-byte name cannot come from the inline arena");
    frame_request_done(fr);
    free(fr);
    free(buf);
    expect_no_leaks();
}

/* The same for the paths that decode the header and then give up on the frame. */
Test(frame, big_header_freed_on_too_big_and_again)
{
    char service[600];
    memset(service, 'y', sizeof(service) - 1);
    service[sizeof(service) - 1] = '\0';
    Mpim__RpcHeader h = MPIM__RPC_HEADER__INIT;
    h.service_name.data = (uint8_t *)service;
    h.service_name.len = sizeof(service) - 1;
    h.args_size = 5000;
    uint8_t *buf = malloc(FRAME_PREFIX + mpim__rpc_header__get_packed_size(&h));
    size_t n = make_raw_frame(buf, &h, NULL, 0);

    struct frame_request *fr = malloc(sizeof(*fr));
    cr_assert_eq(frame_parse_request(buf, n, 4096, fr), FRAME_ERR_TOO_BIG);
    frame_request_done(fr);
    free(fr);
    expect_no_leaks();

    fr = malloc(sizeof(*fr));
    cr_assert_eq(frame_parse_request(buf, n, MAX_FRAME, fr), FRAME_AGAIN);
    cr_assert_eq(fr->frame_len, n + 5000);
    frame_request_done(fr);
    free(fr);
    free(buf);
    expect_no_leaks();
}

Test(frame, request_written_then_parsed_round_trip)
{
    uint8_t args[200];
    for (size_t i = 0; i < sizeof(args); i++)
        args[i] = (uint8_t)(255 - i);
    size_t n;
    uint8_t *buf = make_frame("mpim.PresenceService", "UnbindRoute", args, sizeof(args), &n);
    struct frame_request fr;
    cr_assert_eq(frame_parse_request(buf, n, MAX_FRAME, &fr), FRAME_OK);
    cr_assert(bytes_is(&fr.header->service_name, "mpim.PresenceService"));
    cr_assert(bytes_is(&fr.header->method_name, "UnbindRoute"));
    cr_assert_eq(fr.header->args_size, sizeof(args));
    cr_assert_eq(memcmp(fr.args, args, sizeof(args)), 0);
    frame_request_done(&fr);
    free(buf);
    expect_no_leaks();
}

Test(frame, response_round_trip)
{
    struct pr_request req;
    memset(&req, 0, sizeof(req));
    req.method = PR_METHOD_QUERY;
    request_set_result(&req, MPIM__CODE__NOT_FOUND, "no route");
    size_t n = codec_response_size(&req);
    uint8_t *out = malloc(n);
    cr_assert_eq(codec_encode_response(&req, out), n);

    for (size_t k = 0; k < n; k++) {
        uint8_t *copy = malloc(k > 0 ? k : 1);
        memcpy(copy, out, k);
        const uint8_t *body;
        size_t body_len, frame_len;
        cr_assert_eq(frame_parse_response(copy, k, MAX_FRAME, &body, &body_len, &frame_len), FRAME_AGAIN,
                     "response prefix %zu", k);
        free(copy);
    }
    const uint8_t *body = NULL;
    size_t body_len = 0, frame_len = 0;
    cr_assert_eq(frame_parse_response(out, n, MAX_FRAME, &body, &body_len, &frame_len), FRAME_OK);
    cr_assert_eq(frame_len, n);
    cr_assert_eq(body, out + FRAME_PREFIX);
    cr_assert_eq(body_len, n - FRAME_PREFIX);
    Mpim__ErrorResp *e = mpim__error_resp__unpack(NULL, body_len, body);
    cr_assert_not_null(e);
    cr_assert_not_null(e->result);
    cr_assert_eq(e->result->code, MPIM__CODE__NOT_FOUND);
    cr_assert_str_eq(e->result->msg, "no route");
    mpim__error_resp__free_unpacked(e, NULL);
    free(out);
    expect_no_leaks();
}

Test(frame, response_back_to_back_and_limits)
{
    uint8_t buf[32];
    frame_put_u32le(buf, 3);
    memcpy(buf + 4, "abc", 3);
    frame_put_u32le(buf + 7, 0); /* an empty body is a valid response */
    const uint8_t *body;
    size_t body_len, frame_len;
    cr_assert_eq(frame_parse_response(buf, 11, 64, &body, &body_len, &frame_len), FRAME_OK);
    cr_assert_eq(body_len, 3);
    cr_assert_eq(frame_len, 7);
    cr_assert_eq(memcmp(body, "abc", 3), 0);
    cr_assert_eq(frame_parse_response(buf + 7, 4, 64, &body, &body_len, &frame_len), FRAME_OK);
    cr_assert_eq(body_len, 0);
    cr_assert_eq(frame_len, 4);

    frame_put_u32le(buf, 65);
    cr_assert_eq(frame_parse_response(buf, 4, 64, &body, &body_len, &frame_len), FRAME_ERR_TOO_BIG);
    frame_put_u32le(buf, 0x7fffffffu);
    cr_assert_eq(frame_parse_response(buf, 4, MAX_FRAME, &body, &body_len, &frame_len), FRAME_ERR_TOO_BIG);
    expect_no_leaks();
}

Test(frame, u32le_helpers)
{
    uint8_t b[4];
    frame_put_u32le(b, 0x01020304u);
    cr_assert_eq(b[0], 4);
    cr_assert_eq(b[1], 3);
    cr_assert_eq(b[2], 2);
    cr_assert_eq(b[3], 1);
    cr_assert_eq(frame_get_u32le(b), 0x01020304u);
    frame_put_u32le(b, 0xfffffffeu);
    cr_assert_eq(frame_get_u32le(b), 0xfffffffeu);
    expect_no_leaks();
}
