/* Contract §3 "Validation, before anything is written": user_id > 0, gateway_addr 1-255
 * printable ASCII, message at most max_message_bytes. Every refusal is INVALID naming the field,
 * and leaves Redis and Pub/Sub untouched. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define MAX_MESSAGE 1024

static void validation_init(void)
{
    fx_init_redis();
    it_config_set(&FX.cfg, "presence_service", "max_message_bytes", "%d", MAX_MESSAGE);
    fx_start_server();
}

TestSuite(validation, .init = validation_init, .fini = fx_fini, .timeout = IT_TIMEOUT);

/* Send one request of `method` for uid / gateway / message (not every field is used by every
 * method) without any client-side checks. */
static void send_req(struct pc_client *c, int method, int64_t uid, ProtobufCBinaryData gw,
                     ProtobufCBinaryData msg)
{
    union {
        ProtobufCMessage base;
        Mpim__BindRouteReq bind;
        Mpim__QueryRouteReq query;
        Mpim__DeliverReq deliver;
        Mpim__UnbindRouteReq unbind;
        Mpim__HeartbeatReq heartbeat;
    } m;
    switch (method) {
    case PR_METHOD_BIND:
        mpim__bind_route_req__init(&m.bind);
        m.bind.user_id = uid;
        m.bind.gateway_addr = gw;
        break;
    case PR_METHOD_QUERY:
        mpim__query_route_req__init(&m.query);
        m.query.user_id = uid;
        break;
    case PR_METHOD_DELIVER:
        mpim__deliver_req__init(&m.deliver);
        m.deliver.user_id = uid;
        m.deliver.message = msg;
        break;
    case PR_METHOD_UNBIND:
        mpim__unbind_route_req__init(&m.unbind);
        m.unbind.user_id = uid;
        m.unbind.gateway_addr = gw;
        break;
    default:
        mpim__heartbeat_req__init(&m.heartbeat);
        m.heartbeat.user_id = uid;
        m.heartbeat.gateway_addr = gw;
        break;
    }
    cr_assert_eq(pc_send(c, method, &m.base), 0, "%s", pc_error(c));
}

/* The next answer must be INVALID with a message naming `field`. */
static void expect_invalid(struct pc_client *c, const char *field, const char *what)
{
    Mpim__ErrorResp *e = it_recv_error(c);
    cr_assert_eq(e->result->code, MPIM__CODE__INVALID, "%s: got %s '%s', want INVALID", what,
                 pc_code_name(e->result->code), e->result->msg);
    cr_assert_not_null(strstr(e->result->msg, field), "%s: message '%s' does not name %s", what,
                       e->result->msg, field);
    it_free(e);
}

IT(validation, non_positive_user_ids_are_invalid_for_every_method_and_write_nothing)
{
    static const int64_t bad[] = {0, -1, INT64_MIN};
    const char *ch[] = {"presence:route", "user:0", "user:-1", "user:-9223372036854775808", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    for (int i = 0; i < 3; i++)
        for (int m = PR_METHOD_BIND; m <= PR_METHOD_HEARTBEAT; m++) { /* the five that name a user */
            send_req(c, m, bad[i], it_bytes("gw-1:7000"), it_bytes("hello"));
            char what[96];
            snprintf(what, sizeof(what), "%s user_id=%lld", request_method_name(m), (long long)bad[i]);
            expect_invalid(c, "user_id", what);
        }
    cr_assert_eq(it_rdbsize_all(FX.cache.port), 0, "an invalid request wrote to Redis");
    it_sub_expect_nothing(s, "presence:route");
    it_sub_close(s);
    pc_close(c);
}

IT(validation, bad_gateways_are_invalid_and_leave_the_route_untouched)
{
    char long_gw[257];
    memset(long_gw, 'a', 256);
    long_gw[256] = '\0';
    static const uint8_t with_nul[] = {'g', 'w', 0x00, '1'};
    static const uint8_t high_bit[] = {0x80, 'g', 'w'};
    static const uint8_t with_del[] = {'g', 'w', 0x7f};
    static const uint8_t with_tab[] = {'g', '\t', 'w'};
    ProtobufCBinaryData bad[] = {
        it_bytes(""),
        it_bytes(long_gw),
        it_bytes("gw\x01:7000"),
        {sizeof(with_nul), (uint8_t *)with_nul},
        {sizeof(high_bit), (uint8_t *)high_bit},
        {sizeof(with_del), (uint8_t *)with_del},
        {sizeof(with_tab), (uint8_t *)with_tab},
    };
    static const char *const names[] = {"empty",     "256 bytes", "a control byte", "a NUL byte",
                                        "byte 0x80", "byte 0x7f", "a tab"};
    static const int methods[] = {PR_METHOD_BIND, PR_METHOD_UNBIND, PR_METHOD_HEARTBEAT};

    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 77, "gw-good:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK);
    it_free(b);
    it_rcmd(FX.cache.port, 0, "EXPIRE user:route:77 1000");
    it_rcmd(FX.cache.port, 0, "EXPIRE user:status:77 900");
    const char *ch[] = {"presence:route", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        for (size_t m = 0; m < 3; m++) {
            send_req(c, methods[m], 77, bad[i], it_bytes(""));
            char what[96];
            snprintf(what, sizeof(what), "%s with a gateway of %s", request_method_name(methods[m]),
                     names[i]);
            expect_invalid(c, "gateway_addr", what);
        }

    char *v = it_rget(FX.cache.port, 0, "user:route:77", NULL);
    cr_assert_not_null(v, "an invalid unbind deleted the route");
    cr_assert_str_eq(v, "gw-good:1", "an invalid bind replaced the route");
    free(v);
    cr_assert(it_rexists(FX.cache.port, 0, "user:status:77"));
    cr_assert_leq(it_rttl(FX.cache.port, 0, "user:route:77"), 1000, "an invalid heartbeat renewed");
    cr_assert_leq(it_rttl(FX.cache.port, 0, "user:status:77"), 900, "an invalid heartbeat renewed");
    cr_assert_eq(it_rdbsize_all(FX.cache.port), 4, "route, status and sessions of user 77 only, and its "
                                                   "gateway's session index");
    it_sub_expect_nothing(s, "presence:route");
    it_sub_close(s);
    pc_close(c);
}

IT(validation, gateway_of_255_printable_bytes_is_accepted)
{
    char gw[256];
    for (int i = 0; i < 255; i++)
        gw[i] = (char)(0x20 + i % 95); /* every printable ASCII byte, space included */
    gw[255] = '\0';
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 78, gw);
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "%s %s", pc_code_name(b->result->code), b->result->msg);
    it_free(b);
    Mpim__QueryRouteResp *q = it_query(c, 78);
    cr_assert_eq(q->result->code, MPIM__CODE__OK);
    cr_assert(it_bytes_eq(q->gateway_addr, gw), "255-byte gateway did not round-trip");
    it_free(q);
    Mpim__HeartbeatResp *h = it_heartbeat(c, 78, gw);
    cr_assert(h->refreshed);
    it_free(h);
    Mpim__UnbindRouteResp *u = it_unbind(c, 78, gw);
    cr_assert(u->unbound);
    it_free(u);
    pc_close(c);
}

IT(validation, message_over_max_message_bytes_is_invalid_and_not_published)
{
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 5, "gw-1:7000");
    cr_assert_eq(b->result->code, MPIM__CODE__OK);
    it_free(b);
    const char *ch[] = {"user:5", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);

    uint8_t *big = malloc(MAX_MESSAGE + 1);
    cr_assert_not_null(big);
    memset(big, 'x', MAX_MESSAGE + 1);
    ProtobufCBinaryData over = {MAX_MESSAGE + 1, big};
    send_req(c, PR_METHOD_DELIVER, 5, it_bytes(""), over);
    expect_invalid(c, "message", "Deliver of max_message_bytes + 1");
    it_sub_expect_nothing(s, "user:5");

    /* Exactly the limit is fine, and the connection is still in step. */
    Mpim__DeliverResp *d = it_deliver(c, 5, big, MAX_MESSAGE, NULL);
    cr_assert_eq(d->result->code, MPIM__CODE__OK, "a message of exactly max_message_bytes: %s %s",
                 pc_code_name(d->result->code), d->result->msg);
    cr_assert(d->delivered);
    it_free(d);
    it_sub_expect(s, "user:5", big, MAX_MESSAGE);
    free(big);
    it_sub_close(s);
    pc_close(c);
}

IT(validation, invalid_message_on_unrouted_user_is_still_invalid)
{
    /* Validation comes before the route lookup: not NOT_FOUND. */
    struct pc_client *c = it_connect();
    uint8_t big[MAX_MESSAGE + 10];
    memset(big, 'y', sizeof(big));
    ProtobufCBinaryData over = {sizeof(big), big};
    send_req(c, PR_METHOD_DELIVER, 6, it_bytes(""), over);
    expect_invalid(c, "message", "oversized Deliver to a user with no route");
    pc_close(c);
}

IT(validation, int64_max_user_id_works_end_to_end)
{
    const int64_t uid = INT64_MAX;
    const char *ch[] = {"presence:route", "user:9223372036854775807", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();

    Mpim__BindRouteResp *b = it_bind(c, uid, "gw-max:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "%s", b->result->msg);
    cr_assert_str_eq(b->route_key, "user:route:9223372036854775807");
    it_free(b);
    it_sub_expect(s, "presence:route", "9223372036854775807:gw-max:1",
                  strlen("9223372036854775807:gw-max:1"));
    char *v = it_rget(FX.cache.port, 0, "user:route:9223372036854775807", NULL);
    cr_assert_not_null(v);
    cr_assert_str_eq(v, "gw-max:1");
    free(v);
    cr_assert(it_rexists(FX.cache.port, 0, "user:status:9223372036854775807"));

    Mpim__QueryRouteResp *q = it_query(c, uid);
    cr_assert_eq(q->result->code, MPIM__CODE__OK);
    cr_assert(it_bytes_eq(q->gateway_addr, "gw-max:1"));
    it_free(q);

    Mpim__DeliverResp *d = it_deliver(c, uid, "max", 3, NULL);
    cr_assert_eq(d->result->code, MPIM__CODE__OK);
    cr_assert(d->delivered);
    it_free(d);
    it_sub_expect(s, "user:9223372036854775807", "max", 3);

    Mpim__HeartbeatResp *h = it_heartbeat(c, uid, "gw-max:1");
    cr_assert(h->refreshed);
    it_free(h);
    Mpim__UnbindRouteResp *u = it_unbind(c, uid, "gw-max:1");
    cr_assert(u->unbound);
    it_free(u);
    it_sub_expect(s, "presence:route", "9223372036854775807:", strlen("9223372036854775807:"));
    cr_assert_eq(it_rdbsize_all(FX.cache.port), 0);
    it_sub_close(s);
    pc_close(c);
}

IT(validation, user_id_one_is_the_smallest_valid)
{
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:7000");
    cr_assert_eq(b->result->code, MPIM__CODE__OK, "%s", b->result->msg);
    cr_assert_str_eq(b->route_key, "user:route:1");
    it_free(b);
    pc_close(c);
}
