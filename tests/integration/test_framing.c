/* Contract §1: recoverable errors answer INVALID and keep the connection; unrecoverable framing
 * errors close only that connection, without a reply; a frame not received whole never runs. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/frame.h"
#include "harness.h"

#define MAX_FRAME 4096

static void framing_init(void)
{
    fx_init_redis();
    it_config_set(&FX.cfg, "presence_service", "max_frame_bytes", "%d", MAX_FRAME);
    fx_start_server();
}

TestSuite(framing, .init = framing_init, .fini = fx_fini, .timeout = IT_TIMEOUT);

static void send_query(struct pc_client *c, int64_t uid)
{
    Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
    q.user_id = uid;
    cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
}

/* The next answer is INVALID (decoded as the bare Result every client can read). */
static void expect_invalid(struct pc_client *c, const char *what)
{
    Mpim__ErrorResp *e = it_recv_error(c);
    cr_assert_eq(e->result->code, MPIM__CODE__INVALID, "%s: got %s '%s'", what, pc_code_name(e->result->code),
                 e->result->msg);
    cr_assert_str_neq(e->result->msg, "", "%s: INVALID without saying what was wrong", what);
    it_free(e);
}

/* The connection is still in step: a Query sent after the bad frame gets its own answer. */
static void expect_query_answer(struct pc_client *c, int64_t uid, int code)
{
    Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
    cr_assert_eq((int)q->result->code, code, "query %lld after a bad frame: got %s", (long long)uid,
                 pc_code_name(q->result->code));
    it_free(q);
}

/* Another connection is unaffected. */
static void expect_server_fine(void)
{
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 999, "gw-ok:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "server no longer serves: %s", b->result->msg);
    it_free(b);
    pc_close(c);
}

static uint8_t *query_args(int64_t uid, size_t *len)
{
    Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
    q.user_id = uid;
    *len = protobuf_c_message_get_packed_size(&q.base);
    uint8_t *buf = malloc(*len + 1);
    cr_assert_not_null(buf);
    protobuf_c_message_pack(&q.base, buf);
    return buf;
}

/* Lines in the server log so far. */
static int log_lines(void)
{
    char *text = it_read_file(FX.srv.log);
    cr_assert_not_null(text);
    int n = 0;
    for (const char *p = text; *p != '\0'; p++)
        n += *p == '\n';
    free(text);
    return n;
}

/* "logs one line": the log grows after a connection was closed for a framing error. */
static void expect_logged_since(int before, const char *what)
{
    double deadline = it_mono_ms() + 2000.0 * IT_SLOW;
    while (log_lines() <= before) {
        cr_assert_lt(it_mono_ms(), deadline, "nothing logged about %s", what);
        it_sleep_ms(20);
    }
}

/* ------------------------------------------------------- recoverable: INVALID */

IT(framing, unknown_service_is_invalid_and_connection_stays_usable)
{
    struct pc_client *c = it_connect();
    Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
    q.user_id = 3;
    it_send_frame(c, "NoSuchService", "QueryRoute", &q.base);
    send_query(c, 3);
    expect_invalid(c, "unknown service");
    expect_query_answer(c, 3, MPIM__CODE__NOT_FOUND);
    pc_close(c);
}

IT(framing, service_name_prefix_match_is_not_enough)
{
    /* "PresenceServiceX" and "mpim.PresenceServic" are unknown services, not near misses. */
    struct pc_client *c = it_connect();
    Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
    q.user_id = 3;
    it_send_frame(c, "PresenceServiceX", "QueryRoute", &q.base);
    it_send_frame(c, "mpim.PresenceServic", "QueryRoute", &q.base);
    it_send_frame(c, "", "QueryRoute", &q.base);
    send_query(c, 3);
    expect_invalid(c, "PresenceServiceX");
    expect_invalid(c, "mpim.PresenceServic");
    expect_invalid(c, "empty service name");
    expect_query_answer(c, 3, MPIM__CODE__NOT_FOUND);
    pc_close(c);
}

IT(framing, unknown_method_is_invalid_and_connection_stays_usable)
{
    struct pc_client *c = it_connect();
    Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
    q.user_id = 3;
    it_send_frame(c, IT_SERVICE, "Frobnicate", &q.base);
    it_send_frame(c, IT_SERVICE, "queryroute", &q.base);
    send_query(c, 3);
    expect_invalid(c, "unknown method");
    expect_invalid(c, "method names are case-sensitive");
    expect_query_answer(c, 3, MPIM__CODE__NOT_FOUND);
    pc_close(c);
}

IT(framing, args_that_do_not_parse_are_invalid_and_connection_stays_usable)
{
    struct pc_client *c = it_connect();
    static const uint8_t garbage[] = {0xff, 0xff, 0xff}; /* a truncated varint tag */
    size_t flen = frame_request_size(IT_SERVICE, "BindRoute", sizeof(garbage));
    uint8_t *f = malloc(flen);
    cr_assert_not_null(f);
    frame_write_request(f, IT_SERVICE, "BindRoute", garbage, sizeof(garbage));
    cr_assert_eq(pc_send_raw(c, f, flen), 0);
    free(f);
    send_query(c, 4);
    expect_invalid(c, "BindRoute args that do not parse");
    expect_query_answer(c, 4, MPIM__CODE__NOT_FOUND);
    cr_assert_eq(it_rdbsize_all(FX.cache.port), 0);
    pc_close(c);
}

IT(framing, empty_rpc_header_is_invalid_and_connection_stays_usable)
{
    struct pc_client *c = it_connect();
    static const uint8_t empty[4] = {0, 0, 0, 0}; /* H = 0: every field at its default */
    cr_assert_eq(pc_send_raw(c, empty, sizeof(empty)), 0);
    send_query(c, 5);
    expect_invalid(c, "empty RpcHeader");
    expect_query_answer(c, 5, MPIM__CODE__NOT_FOUND);
    pc_close(c);
}

IT(framing, method_without_args_uses_defaults_and_is_invalid_user_id)
{
    /* args_size 0 is a valid empty message: user_id 0, which validation refuses. */
    struct pc_client *c = it_connect();
    it_send_frame(c, IT_SERVICE, "QueryRoute", NULL);
    send_query(c, 6);
    Mpim__ErrorResp *e = it_recv_error(c);
    cr_assert_eq(e->result->code, MPIM__CODE__INVALID);
    cr_assert_not_null(strstr(e->result->msg, "user_id"), "'%s'", e->result->msg);
    it_free(e);
    expect_query_answer(c, 6, MPIM__CODE__NOT_FOUND);
    pc_close(c);
}

IT(framing, frame_of_exactly_max_frame_bytes_is_served)
{
    /* H + args_size == max_frame_bytes is within the limit. */
    Mpim__DeliverReq d = MPIM__DELIVER_REQ__INIT;
    d.user_id = 8;
    size_t lo = 0, hi = MAX_FRAME;
    uint8_t *payload = calloc(1, MAX_FRAME);
    cr_assert_not_null(payload);
    /* Find the payload length whose frame is exactly MAX_FRAME + 4 bytes. */
    while (lo < hi) {
        size_t mid = (lo + hi + 1) / 2;
        d.message.data = payload;
        d.message.len = mid;
        size_t alen = protobuf_c_message_get_packed_size(&d.base);
        if (frame_request_size(IT_SERVICE, "Deliver", alen) - FRAME_PREFIX <= MAX_FRAME)
            lo = mid;
        else
            hi = mid - 1;
    }
    d.message.len = lo;
    size_t len;
    uint8_t *f = it_frame(IT_SERVICE, "Deliver", &d.base, &len);
    cr_assert_eq(len - FRAME_PREFIX, MAX_FRAME, "could not build an exact-size frame");
    struct pc_client *c = it_connect();
    cr_assert_eq(pc_send_raw(c, f, len), 0);
    Mpim__DeliverResp *r = (Mpim__DeliverResp *)it_recv(c, PR_METHOD_DELIVER);
    cr_assert_eq(r->result->code, MPIM__CODE__NOT_FOUND, "got %s %s", pc_code_name(r->result->code),
                 r->result->msg);
    it_free(r);
    free(f);
    free(payload);
    pc_close(c);
}

/* ---------------------------------------------------- unrecoverable: close */

IT(framing, oversized_frame_closes_only_that_connection_without_reply)
{
    struct pc_client *other = it_connect();
    int fd = it_tcp_connect(FX.srv.port);
    int before = log_lines();
    /* A header announcing more than max_frame_bytes of args; the args never come. */
    Mpim__RpcHeader h = MPIM__RPC_HEADER__INIT;
    h.service_name = it_bytes(IT_SERVICE);
    h.method_name = it_bytes("Deliver");
    h.args_size = MAX_FRAME;
    uint8_t buf[128];
    size_t hlen = mpim__rpc_header__pack(&h, buf + 4);
    frame_put_u32le(buf, (uint32_t)hlen);
    it_write_all(fd, buf, 4 + hlen);
    int rc = it_wait_closed(fd, 3000 * IT_SLOW);
    cr_assert_neq(rc, 0, "the server replied to an oversized frame");
    cr_assert_eq(rc, 1, "the server did not close a connection announcing an oversized frame");
    close(fd);
    expect_logged_since(before, "an oversized frame");

    /* The other, already open connection is unaffected. */
    Mpim__QueryRouteResp *q = it_query(other, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND);
    it_free(q);
    pc_close(other);
    expect_server_fine();
}

IT(framing, oversized_frame_sent_whole_is_never_executed)
{
    struct pc_client *other = it_connect();
    /* A Bind whose frame is over the limit only because of padding in client_ip. */
    Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
    b.user_id = 70;
    b.gateway_addr = it_bytes("gw-big:1");
    char *pad = malloc(MAX_FRAME);
    cr_assert_not_null(pad);
    memset(pad, '1', MAX_FRAME - 1);
    pad[MAX_FRAME - 1] = '\0';
    b.client_ip = it_bytes(pad);
    size_t len;
    uint8_t *f = it_frame(IT_SERVICE, "BindRoute", &b.base, &len);
    int fd = it_tcp_connect(FX.srv.port);
    it_write_all(fd, f, len);
    cr_assert_eq(it_wait_closed(fd, 3000 * IT_SLOW), 1, "want the connection closed, no reply");
    close(fd);
    free(f);
    free(pad);
    cr_assert_not(it_rexists(FX.cache.port, 0, "user:route:70"), "the oversized Bind was executed");
    Mpim__QueryRouteResp *q = it_query(other, 70);
    cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND);
    it_free(q);
    pc_close(other);
}

IT(framing, garbled_rpc_header_closes_connection_without_reply)
{
    struct pc_client *other = it_connect();
    int fd = it_tcp_connect(FX.srv.port);
    static const uint8_t bad[] = {5, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff};
    int before = log_lines();
    it_write_all(fd, bad, sizeof(bad));
    int rc = it_wait_closed(fd, 3000 * IT_SLOW);
    cr_assert_neq(rc, 0, "the server replied to a garbled RpcHeader");
    cr_assert_eq(rc, 1, "the server did not close after a garbled RpcHeader");
    close(fd);
    expect_logged_since(before, "a garbled RpcHeader");
    Mpim__QueryRouteResp *q = it_query(other, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND);
    it_free(q);
    pc_close(other);
    expect_server_fine();
}

IT(framing, garbled_header_after_good_requests_answers_those_first)
{
    /* Requests before the bad frame were read whole: they may be answered; none after it. */
    int fd = it_tcp_connect(FX.srv.port);
    size_t alen;
    uint8_t *args = query_args(1, &alen);
    size_t flen = frame_request_size(IT_SERVICE, "QueryRoute", alen);
    uint8_t *buf = malloc(flen + 16);
    cr_assert_not_null(buf);
    frame_write_request(buf, IT_SERVICE, "QueryRoute", args, alen);
    static const uint8_t bad[] = {3, 0, 0, 0, 0x0a, 0x7f, 0x01}; /* length 127 with 1 byte */
    memcpy(buf + flen, bad, sizeof(bad));
    it_write_all(fd, buf, flen + sizeof(bad));
    /* Whatever came back must be at most that one answer, then the close. */
    double deadline = it_mono_ms() + 3000.0 * IT_SLOW;
    uint8_t in[256];
    size_t have = 0;
    bool closed = false;
    while (!closed && it_mono_ms() < deadline) {
        ssize_t n = read(fd, in + have, sizeof(in) - have);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (n <= 0)
            closed = true;
        else
            have += (size_t)n;
    }
    cr_assert(closed, "connection not closed after a garbled header");
    if (have > 0) {
        const uint8_t *body;
        size_t blen, frame_len;
        cr_assert_eq(frame_parse_response(in, have, 1 << 20, &body, &blen, &frame_len), FRAME_OK);
        cr_assert_eq(frame_len, have, "more than one answer before the close");
    }
    free(args);
    free(buf);
    close(fd);
    expect_server_fine();
}

IT(framing, huge_length_prefix_closes_connection)
{
    struct pc_client *other = it_connect();
    int fd = it_tcp_connect(FX.srv.port);
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0x7f};
    it_write_all(fd, huge, sizeof(huge));
    cr_assert_eq(it_wait_closed(fd, 3000 * IT_SLOW), 1,
                 "a 0x7fffffff length prefix did not close the connection");
    close(fd);
    Mpim__QueryRouteResp *q = it_query(other, 1);
    cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND);
    it_free(q);
    pc_close(other);
}

IT(framing, half_a_frame_then_disconnect_is_not_executed)
{
    Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
    b.user_id = 71;
    b.gateway_addr = it_bytes("gw-half:1");
    size_t len;
    uint8_t *f = it_frame(IT_SERVICE, "BindRoute", &b.base, &len);
    /* Cut inside the prefix, inside the header, and inside the args. */
    size_t cuts[] = {2, 9, len - 1};
    double received = it_metric_now(&FX.srv, "impresence_received_bytes_total");
    for (size_t i = 0; i < 3; i++) {
        int fd = it_tcp_connect(FX.srv.port);
        it_write_all(fd, f, cuts[i]);
        received += (double)cuts[i];
        it_wait_metric(&FX.srv, "impresence_received_bytes_total", received, 5000 * IT_SLOW); /* read */
        close(fd);
    }
    free(f);
    it_wait_metric(&FX.srv, "impresence_connections_open", 0, 5000 * IT_SLOW); /* the closes seen */
    cr_assert_not(it_rexists(FX.cache.port, 0, "user:route:71"), "a half frame was executed");
    expect_server_fine();
}

IT(framing, frame_split_into_single_bytes_is_served)
{
    Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
    b.user_id = 72;
    b.gateway_addr = it_bytes("gw-slow:1");
    size_t len;
    uint8_t *f = it_frame(IT_SERVICE, "BindRoute", &b.base, &len);
    int fd = it_tcp_connect(FX.srv.port);
    double received = it_metric_now(&FX.srv, "impresence_received_bytes_total");
    for (size_t i = 0; i < len; i++) {
        it_write_all(fd, f + i, 1);
        /* Read before the next byte goes: the server really sees one byte at a time. */
        it_wait_metric(&FX.srv, "impresence_received_bytes_total", received + (double)i + 1, 5000 * IT_SLOW);
    }
    uint8_t in[256];
    size_t have = 0;
    const uint8_t *body;
    size_t blen, frame_len;
    double deadline = it_mono_ms() + 3000.0 * IT_SLOW;
    while (frame_parse_response(in, have, sizeof(in), &body, &blen, &frame_len) != FRAME_OK) {
        cr_assert_lt(it_mono_ms(), deadline, "no answer to a byte-by-byte frame");
        ssize_t n = read(fd, in + have, sizeof(in) - have);
        cr_assert_gt(n, 0, "connection closed");
        have += (size_t)n;
    }
    Mpim__BindRouteResp *r = mpim__bind_route_resp__unpack(NULL, blen, body);
    cr_assert_not_null(r);
    cr_assert_eq(r->result->code, MPIM__CODE__OK);
    it_free(r);
    free(f);
    close(fd);
}

IT(framing, ten_thousand_tiny_frames_in_one_write_answered_in_order)
{
    enum { N = 10000, BOUND_EVERY = 3 };
    struct pc_client *c = it_connect();
    /* Users 3, 6, 9, ... get routes "g<uid>" in one pipeline. */
    for (int uid = BOUND_EVERY; uid <= N; uid += BOUND_EVERY) {
        char gw[32];
        snprintf(gw, sizeof(gw), "g%d", uid);
        Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
        b.user_id = uid;
        b.gateway_addr = it_bytes(gw);
        cr_assert_eq(pc_send(c, PR_METHOD_BIND, &b.base), 0);
    }
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    for (int uid = BOUND_EVERY; uid <= N; uid += BOUND_EVERY) {
        Mpim__BindRouteResp *r = (Mpim__BindRouteResp *)it_recv(c, PR_METHOD_BIND);
        cr_assert_eq(r->result->code, MPIM__CODE__OK, "bind %d: %s", uid, r->result->msg);
        it_free(r);
    }

    /* 10,000 Query frames back to back in one buffer, one write. */
    uint8_t *all = malloc((size_t)N * 64);
    cr_assert_not_null(all);
    size_t off = 0;
    for (int uid = 1; uid <= N; uid++) {
        size_t alen;
        uint8_t *args = query_args(uid, &alen);
        off += frame_write_request(all + off, IT_SERVICE, "QueryRoute", args, alen);
        free(args);
    }
    cr_assert_eq(pc_send_raw(c, all, off), 0);
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    free(all);
    for (int uid = 1; uid <= N; uid++) {
        Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
        if (uid % BOUND_EVERY == 0) {
            char gw[32];
            snprintf(gw, sizeof(gw), "g%d", uid);
            cr_assert_eq(q->result->code, MPIM__CODE__OK, "answer %d: got %s", uid,
                         pc_code_name(q->result->code));
            cr_assert(it_bytes_eq(q->gateway_addr, gw), "answer %d out of order: gateway '%.*s'", uid,
                      (int)q->gateway_addr.len, q->gateway_addr.data);
        } else {
            cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "answer %d out of order: got %s", uid,
                         pc_code_name(q->result->code));
        }
        it_free(q);
    }
    pc_close(c);
}

IT(framing, bad_frames_mixed_into_a_pipeline_keep_their_places)
{
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 2, "gw-2:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK);
    it_free(b);
    Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
    q.user_id = 2;
    for (int i = 0; i < 50; i++) {
        if (i % 5 == 1)
            it_send_frame(c, IT_SERVICE, "NoSuchMethod", &q.base);
        else
            cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
    }
    cr_assert_eq(pc_flush(c), 0);
    for (int i = 0; i < 50; i++) {
        Mpim__QueryRouteResp *r = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
        if (i % 5 == 1) {
            cr_assert_eq(r->result->code, MPIM__CODE__INVALID, "answer %d: got %s", i,
                         pc_code_name(r->result->code));
        } else {
            cr_assert_eq(r->result->code, MPIM__CODE__OK, "answer %d: got %s", i,
                         pc_code_name(r->result->code));
            cr_assert(it_bytes_eq(r->gateway_addr, "gw-2:1"));
        }
        it_free(r);
    }
    pc_close(c);
}
