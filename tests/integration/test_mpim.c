/* MPIM as it ships (contract §9, issue #12): with [presence_service] dialect = mpim, frames built
 * byte for byte as MPIM's gateway and message service build them. MPIM's own messages are not our
 * .proto: its DeliveReq is { int64 to = 1; bytes payload = 3; } and its BindRouteReq carries
 * gateway_id = 2 and a device placeholder "cli" = 3, so the args are written here by hand, the way
 * protobuf encodes those fields. A Deliver goes to the channel MPIM's gateway subscribes to:
 * 10000 + std::hash<std::string>(gateway_id) % 50000 ("gw-1:7000" -> 26973, g++ 12 x86-64). */
#include <string.h>

#include "core/frame.h"
#include "harness.h"

static void mpim_init(void)
{
    fx_init_split();
    it_config_set(&FX.cfg, "presence_service", "dialect", "mpim");
    fx_start_server();
}

TestSuite(mpim, .init = mpim_init, .fini = fx_fini, .timeout = IT_TIMEOUT);

/* Append a protobuf varint. */
static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Field `field` as length-delimited bytes. */
static size_t put_bytes(uint8_t *p, int field, const void *data, size_t len)
{
    size_t n = put_varint(p, (uint64_t)field << 3 | 2);
    n += put_varint(p + n, len);
    memcpy(p + n, data, len);
    return n + len;
}

/* Send method with these raw args, framed as MPIM's RPC client frames it. */
static void send_raw(struct pc_client *c, const char *method, const uint8_t *args, size_t alen)
{
    size_t n = frame_request_size("PresenceService", method, alen);
    uint8_t *frame = malloc(n);
    cr_assert_not_null(frame);
    cr_assert_eq(frame_write_request(frame, "PresenceService", method, args, alen), n);
    cr_assert_eq(pc_send_raw(c, frame, n), 0, "%s", pc_error(c));
    free(frame);
}

/* MPIM's gateway: BindRouteReq { user_id = 1; gateway_id = 2; device = 3 ("cli") }. */
static void mpim_bind(struct pc_client *c, int64_t uid, const char *gw)
{
    uint8_t args[128];
    size_t n = put_varint(args, 1 << 3 | 0);
    n += put_varint(args + n, (uint64_t)uid);
    n += put_bytes(args + n, 2, gw, strlen(gw));
    n += put_bytes(args + n, 3, "cli", 3);
    send_raw(c, "BindRoute", args, n);
    Mpim__BindRouteResp *r = (Mpim__BindRouteResp *)it_recv(c, PR_METHOD_BIND);
    cr_assert_eq(r->result->code, MPIM__CODE__OK, "%s", r->result->msg);
    it_free(r);
}

/* MPIM's message service: DeliveReq { to = 1; payload = 3 }. */
static Mpim__DeliverResp *mpim_deliver(struct pc_client *c, int64_t uid, const void *payload, size_t len)
{
    uint8_t args[256];
    size_t n = put_varint(args, 1 << 3 | 0);
    n += put_varint(args + n, (uint64_t)uid);
    n += put_bytes(args + n, 3, payload, len);
    send_raw(c, "Deliver", args, n);
    return (Mpim__DeliverResp *)it_recv(c, PR_METHOD_DELIVER);
}

IT(mpim, deliver_reaches_the_gateway_channel_with_exact_payload_bytes)
{
    const char *ch[] = {"26973", "user:42", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    mpim_bind(c, 42, "gw-1:7000");
    Mpim__QueryRouteResp *q = it_query(c, 42);
    cr_assert(it_bytes_eq(q->gateway_addr, "gw-1:7000"), "the Bind took field 2, ignored 'cli'");
    it_free(q);
    static const uint8_t payload[] = {'h', 'i', 0, 1, 0xff, 0, 'x'}; /* NULs and high bytes */
    Mpim__DeliverResp *r = mpim_deliver(c, 42, payload, sizeof(payload));
    cr_assert_eq(r->result->code, MPIM__CODE__OK, "%s", r->result->msg);
    cr_assert(r->delivered, "the gateway's channel has a subscriber");
    it_free(r);
    it_sub_expect(s, "26973", payload, sizeof(payload));
    it_sub_expect_nothing(s, "user:42");
    it_sub_close(s);
    pc_close(c);
}

IT(mpim, each_gateway_has_its_own_channel)
{
    /* The values: "127.0.0.1:9000" -> 52095, "gateway-a" -> 34928. */
    const char *ch[] = {"52095", "34928", NULL};
    struct it_sub *s = it_sub_open(FX.queue.port, ch);
    struct pc_client *c = it_connect();
    mpim_bind(c, 7, "127.0.0.1:9000");
    mpim_bind(c, 8, "gateway-a");
    Mpim__DeliverResp *r = mpim_deliver(c, 8, "to-8", 4);
    cr_assert(r->delivered);
    it_free(r);
    r = mpim_deliver(c, 7, "to-7", 4);
    cr_assert(r->delivered);
    it_free(r);
    it_sub_expect(s, "34928", "to-8", 4);
    it_sub_expect(s, "52095", "to-7", 4);
    it_sub_close(s);
    pc_close(c);
}

IT(mpim, deliver_to_an_offline_user_is_not_found_and_publishes_nothing)
{
    struct pc_client *c = it_connect();
    Mpim__DeliverResp *r = mpim_deliver(c, 99, "x", 1);
    cr_assert_eq(r->result->code, MPIM__CODE__NOT_FOUND, "%s", r->result->msg);
    cr_assert_not(r->delivered);
    it_free(r);
    pc_close(c);
}
