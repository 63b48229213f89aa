/* core/batch: splitting a batch call's ids by shard, the parts' entries, and the one answer packed
 * from them in list order (contract §7). The threads that run these steps are tested end to end in
 * tests/integration/test_batch.c; here only the pure logic. */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch.h"
#include "core/codec.h"
#include "core/config.h"
#include "core/hash.h"
#include "core/request.h"
#include "core/session_list.h"
#include "leak.h"
#include "presence.pb-c.h"

#define MAX_MSG 64

/* A call decoded from its wire form, as the acceptor has it. Heap-allocated: the parts hold a
 * pointer to it. */
static struct pr_request *call_of(int method, const int64_t *ids, size_t n, const char *message)
{
    Mpim__BatchQueryRouteReq q = MPIM__BATCH_QUERY_ROUTE_REQ__INIT;
    Mpim__BatchDeliverReq d = MPIM__BATCH_DELIVER_REQ__INIT;
    q.n_user_ids = d.n_user_ids = n;
    q.user_ids = d.user_ids = (int64_t *)ids;
    if (message != NULL)
        d.message = (ProtobufCBinaryData){strlen(message), (uint8_t *)message};
    const ProtobufCMessage *m = method == PR_METHOD_BATCH_QUERY ? &q.base : &d.base;
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len + 1);
    cr_assert_not_null(buf);
    protobuf_c_message_pack(m, buf);
    struct pr_request *call = calloc(1, sizeof(*call));
    cr_assert_not_null(call);
    call->method = (uint8_t)method;
    int rc = codec_decode_request(call, buf, len, MAX_MSG, DIALECT_SEED);
    memset(buf, 0xee, len); /* nothing may point into the frame */
    free(buf);
    cr_assert_eq(rc, 0, "decode: %s", call->msg);
    return call;
}

static void call_free(struct pr_request *call)
{
    request_reset(call);
    free(call);
}

/* ---- splitting ---- */

Test(batch, split_sends_each_id_where_its_single_call_goes)
{
    const int64_t ids[] = {7, 0, 42, -3, 7, INT64_MAX, 1, 99999};
    const size_t n = sizeof(ids) / sizeof(ids[0]);
    const uint32_t nshards = 4;
    uint32_t shard_of[8], count[5];
    memset(count, 0xa5, sizeof(count));
    batch_split(ids, n, nshards, shard_of, count);
    uint32_t want[5] = {0};
    for (size_t i = 0; i < n; i++) {
        uint32_t s = ids[i] > 0 ? hash_shard(ids[i], nshards) : nshards;
        cr_assert_eq(shard_of[i], s, "id %lld", (long long)ids[i]);
        want[s]++;
    }
    for (uint32_t s = 0; s <= nshards; s++)
        cr_assert_eq(count[s], want[s], "shard %u", s);
    cr_assert_eq(count[nshards], 2, "0 and -3 go to no shard");
    cr_assert_eq(shard_of[0], shard_of[4], "a repeated id goes where it went the first time");
}

Test(batch, a_thousand_ids_reach_every_shard)
{
    enum { N = 1000, SHARDS = 8 };
    int64_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = 1000 + i;
    uint32_t shard_of[N], count[SHARDS + 1];
    batch_split(ids, N, SHARDS, shard_of, count);
    uint32_t total = 0;
    for (int s = 0; s < SHARDS; s++) {
        cr_assert_gt(count[s], N / SHARDS / 2, "shard %d got only %u ids", s, count[s]);
        total += count[s];
    }
    cr_assert_eq(total, N);
    cr_assert_eq(count[SHARDS], 0);
}

Test(batch, take_keeps_list_order_positions_and_repeats)
{
    const int64_t ids[] = {5, 6, 5, -1, 8, 5, 9, 6};
    const size_t n = sizeof(ids) / sizeof(ids[0]);
    const uint32_t nshards = 3;
    uint32_t shard_of[8], count[4];
    batch_split(ids, n, nshards, shard_of, count);
    size_t seen = 0;
    for (uint32_t s = 0; s <= nshards; s++) {
        struct pr_batch *b = batch_take(ids, n, shard_of, s, count[s]);
        cr_assert_not_null(b);
        cr_assert_eq(b->n, count[s]);
        for (uint32_t j = 0; j < b->n; j++) {
            const struct batch_entry *e = &b->entries[j];
            cr_assert_lt(e->index, n);
            cr_assert_eq(shard_of[e->index], s);
            cr_assert_eq(e->user_id, ids[e->index]);
            cr_assert_eq(e->code, MPIM__CODE__INVALID, "unanswered until a shard answers it");
            cr_assert(j == 0 || b->entries[j - 1].index < e->index, "list order within the part");
            cr_assert_null(e->route);
            cr_assert_null(e->sessions);
        }
        seen += b->n;
        batch_free(b);
    }
    cr_assert_eq(seen, n, "every listed id in exactly one part, repeats included");
    expect_no_leaks();
}

Test(batch, one_shard_takes_every_valid_id)
{
    const int64_t ids[] = {3, 1, 2, 0};
    uint32_t shard_of[4], count[2];
    batch_split(ids, 4, 1, shard_of, count);
    cr_assert_eq(count[0], 3);
    cr_assert_eq(count[1], 1);
}

Test(batch, size_limit)
{
    cr_assert_null(batch_check_size(0, 1000), "an empty list is a call like any other");
    cr_assert_null(batch_check_size(1000, 1000));
    const char *why = batch_check_size(1001, 1000);
    cr_assert_not_null(why);
    cr_assert_not_null(strstr(why, "user_ids"), "names the field: %s", why);
    cr_assert_not_null(strstr(why, "max_batch"), "names the limit: %s", why);
    cr_assert_not_null(batch_check_size(2, 1));
}

/* ---- the codec's part ---- */

Test(batch, decode_reads_ids_and_the_message_of_field_2_in_both_dialects)
{
    const int64_t ids[] = {4, -4, 0, 4};
    struct pr_request *call = call_of(PR_METHOD_BATCH_DELIVER, ids, 4, "hello");
    const int64_t *got;
    size_t n;
    batch_ids(call, &got, &n);
    cr_assert_eq(n, 4);
    cr_assert_eq(memcmp(got, ids, sizeof(ids)), 0, "ids <= 0 decode: they are judged per entry");
    cr_assert_eq(call->message.len, 5);
    cr_assert_eq(memcmp(call->message.data, "hello", 5), 0);
    call_free(call);

    /* dialect = mpim changes DeliverReq only (§9): BatchDeliverReq's payload stays field 2. */
    Mpim__BatchDeliverReq d = MPIM__BATCH_DELIVER_REQ__INIT;
    d.n_user_ids = 1;
    d.user_ids = (int64_t *)ids;
    d.message = (ProtobufCBinaryData){3, (uint8_t *)"abc"};
    d.message_type = (ProtobufCBinaryData){4, (uint8_t *)"text"};
    uint8_t buf[64];
    size_t len = mpim__batch_deliver_req__pack(&d, buf);
    struct pr_request req;
    memset(&req, 0, sizeof(req));
    req.method = PR_METHOD_BATCH_DELIVER;
    cr_assert_eq(codec_decode_request(&req, buf, len, MAX_MSG, DIALECT_MPIM), 0, "%s", req.msg);
    cr_assert_eq(req.message.len, 3);
    cr_assert_eq(memcmp(req.message.data, "abc", 3), 0);
    request_reset(&req);
    expect_no_leaks();
}

Test(batch, decode_refuses_a_message_over_max_message_bytes)
{
    const int64_t ids[] = {1};
    char big[MAX_MSG + 2];
    memset(big, 'x', sizeof(big));
    big[MAX_MSG + 1] = '\0';
    Mpim__BatchDeliverReq d = MPIM__BATCH_DELIVER_REQ__INIT;
    d.n_user_ids = 1;
    d.user_ids = (int64_t *)ids;
    d.message = (ProtobufCBinaryData){MAX_MSG + 1, (uint8_t *)big};
    uint8_t buf[256];
    size_t len = mpim__batch_deliver_req__pack(&d, buf);
    struct pr_request req;
    memset(&req, 0, sizeof(req));
    req.method = PR_METHOD_BATCH_DELIVER;
    cr_assert_eq(codec_decode_request(&req, buf, len, MAX_MSG, DIALECT_SEED), -1);
    cr_assert_eq(req.code, MPIM__CODE__INVALID);
    cr_assert_not_null(strstr(req.msg, "message"), "%s", req.msg);
    request_reset(&req);
    d.message.len = MAX_MSG; /* exactly the limit passes */
    len = mpim__batch_deliver_req__pack(&d, buf);
    memset(&req, 0, sizeof(req));
    req.method = PR_METHOD_BATCH_DELIVER;
    cr_assert_eq(codec_decode_request(&req, buf, len, MAX_MSG, DIALECT_SEED), 0, "%s", req.msg);
    request_reset(&req);
    expect_no_leaks();
}

/* A refusal (INVALID over max_batch) is encoded by the codec: result, and BatchDeliver's timestamp. */
Test(batch, refusal_encodes_result_and_timestamp_without_entries)
{
    const int64_t ids[] = {1, 2};
    struct pr_request *call = call_of(PR_METHOD_BATCH_DELIVER, ids, 2, "m");
    request_set_result(call, MPIM__CODE__INVALID, "user_ids lists more ids than max_batch (1)");
    call->timestamp = 1234567;
    size_t n = codec_response_size(call);
    cr_assert_geq(codec_response_bound(call), n);
    uint8_t *out = malloc(n);
    cr_assert_eq(codec_encode_response(call, out), n);
    Mpim__BatchDeliverResp *r = mpim__batch_deliver_resp__unpack(NULL, n - 4, out + 4);
    cr_assert_not_null(r);
    cr_assert_eq(r->result->code, MPIM__CODE__INVALID);
    cr_assert_eq(r->n_results, 0);
    cr_assert_eq(r->timestamp, 1234567);
    mpim__batch_deliver_resp__free_unpacked(r, NULL);
    free(out);
    call_free(call);
    expect_no_leaks();
}

/* ---- answers: entry_take, then pack ---- */

/* A finished single QueryRoute as a shard leaves it. */
static void query_answer(struct pr_request *one, int code, const char *gw, size_t gw_len, bool online,
                         int nsessions)
{
    memset(one, 0, sizeof(*one));
    one->method = PR_METHOD_QUERY;
    one->code = (uint8_t)code;
    one->flag = online;
    if (gw != NULL) {
        one->route = gw_len <= sizeof(one->route_inline) ? one->route_inline : malloc(gw_len);
        memcpy(one->route, gw, gw_len);
        one->route_len = gw_len;
    }
    if (nsessions > 0) {
        one->sessions = session_list_new((size_t)nsessions, 64);
        for (int i = 0; i < nsessions; i++) {
            struct session_view v = {"dev", 3, "gw-s", 4, i, 100 - i, 5000};
            session_list_add(one->sessions, &v);
        }
    }
}

Test(batch, entry_take_moves_the_answer_out_of_the_single_call)
{
    struct batch_entry e;
    struct pr_request one;
    char gw[200];
    memset(gw, 'g', sizeof(gw));
    const size_t lens[] = {9, BATCH_ROUTE_INLINE, BATCH_ROUTE_INLINE + 1, PR_ROUTE_INLINE, 200};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        memset(&e, 0, sizeof(e));
        query_answer(&one, MPIM__CODE__OK, gw, lens[i], true, 2);
        struct pr_sessions *sessions = one.sessions;
        batch_entry_take(&e, &one);
        cr_assert_eq(e.code, MPIM__CODE__OK);
        cr_assert(e.flag);
        cr_assert_eq(e.route_len, lens[i]);
        cr_assert_eq(memcmp(e.route, gw, lens[i]), 0);
        cr_assert_eq(e.route == e.route_inline, lens[i] <= BATCH_ROUTE_INLINE, "inline when it fits");
        cr_assert_eq(e.sessions, sessions, "the sessions change hands");
        cr_assert_null(one.sessions);
        request_reset(&one); /* frees nothing the entry holds */
        if (e.route != e.route_inline)
            free(e.route);
        session_list_free(e.sessions);
    }
    /* A Deliver keeps its route (the mpim channel's gateway): the entry needs code and flag only. */
    memset(&e, 0, sizeof(e));
    query_answer(&one, MPIM__CODE__OK, "gw", 2, true, 0);
    one.method = PR_METHOD_DELIVER;
    batch_entry_take(&e, &one);
    cr_assert(e.flag);
    cr_assert_null(e.route);
    request_reset(&one);
    expect_no_leaks();
}

/* Split a call over nshards, answer each part's ids as `answer` says, put the parts on the call's
 * back list in reverse shard order (parts come back in any order), and pack. */
typedef void answer_fn(struct pr_request *one, int64_t uid);

static void scatter_and_answer(struct pr_request *call, uint32_t nshards, answer_fn *answer, uint32_t skip_shard)
{
    const int64_t *ids;
    size_t n;
    batch_ids(call, &ids, &n);
    uint32_t *shard_of = malloc((n + 1) * sizeof(*shard_of)), count[17];
    cr_assert_leq(nshards, 16);
    batch_split(ids, n, nshards, shard_of, count);
    call->batch = batch_take(ids, n, shard_of, nshards, count[nshards]);
    for (uint32_t s = 0; s < nshards; s++) {
        if (count[s] == 0 || s == skip_shard)
            continue; /* skip_shard: a part that could not be made: its ids are INTERNAL */
        struct pr_request *part = calloc(1, sizeof(*part));
        part->method = call->method;
        part->batch = batch_take(ids, n, shard_of, s, count[s]);
        part->batch->call = call;
        for (uint32_t j = 0; j < part->batch->n; j++) {
            struct pr_request one;
            answer(&one, part->batch->entries[j].user_id);
            batch_entry_take(&part->batch->entries[j], &one);
            request_reset(&one);
        }
        part->next = call->batch->back;
        call->batch->back = part;
    }
    free(shard_of);
}

/* Odd ids are online at "gw-<id>" with (id % 3) sessions, even ones offline. */
static void query_by_parity(struct pr_request *one, int64_t uid)
{
    char gw[32];
    int n = snprintf(gw, sizeof(gw), "gw-%lld", (long long)uid);
    if (uid % 2 != 0)
        query_answer(one, MPIM__CODE__OK, gw, (size_t)n, true, (int)(uid % 3));
    else
        query_answer(one, MPIM__CODE__NOT_FOUND, NULL, 0, false, 0);
}

Test(batch, pack_query_answers_every_id_in_list_order)
{
    enum { N = 300 };
    int64_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = i % 7 == 3 ? -i : i % 11 == 5 ? 101 : 1000 - i; /* some invalid, some repeated */
    struct pr_request *call = call_of(PR_METHOD_BATCH_QUERY, ids, N, NULL);
    scatter_and_answer(call, 5, query_by_parity, UINT32_MAX);
    request_set_result(call, MPIM__CODE__OK, "a note");
    cr_assert_eq(batch_pack(call), 0);
    Mpim__BatchQueryRouteResp *r = mpim__batch_query_route_resp__unpack(NULL, call->packed_len, call->packed);
    cr_assert_not_null(r);
    cr_assert_eq(r->result->code, MPIM__CODE__OK);
    cr_assert_str_eq(r->result->msg, "a note");
    cr_assert_eq(r->n_routes, N);
    for (int i = 0; i < N; i++) {
        const Mpim__RouteEntry *e = r->routes[i];
        cr_assert_eq(e->user_id, ids[i], "entry %d", i);
        if (ids[i] <= 0) {
            cr_assert_eq(e->code, MPIM__CODE__INVALID, "entry %d (%lld)", i, (long long)ids[i]);
            cr_assert_not(e->is_online);
            cr_assert_eq(e->gateway_addr.len, 0);
            continue;
        }
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%lld", (long long)ids[i]);
        bool online = ids[i] % 2 != 0;
        cr_assert_eq(e->code, online ? MPIM__CODE__OK : MPIM__CODE__NOT_FOUND, "entry %d", i);
        cr_assert_eq(e->is_online, online);
        cr_assert_eq(e->gateway_addr.len, online ? strlen(gw) : 0);
        cr_assert(!online || memcmp(e->gateway_addr.data, gw, strlen(gw)) == 0);
        cr_assert_eq(e->n_sessions, online ? (size_t)(ids[i] % 3) : 0, "entry %d", i);
        for (size_t k = 0; k < e->n_sessions; k++)
            cr_assert_eq(e->sessions[k]->epoch, 100 - (int64_t)k);
    }
    mpim__batch_query_route_resp__free_unpacked(r, NULL);
    call_free(call); /* the parts on its back list too */
    expect_no_leaks();
}

static void deliver_by_parity(struct pr_request *one, int64_t uid)
{
    memset(one, 0, sizeof(*one));
    one->method = PR_METHOD_DELIVER;
    one->code = uid % 5 == 0 ? MPIM__CODE__UNAVAILABLE : MPIM__CODE__OK;
    one->flag = uid % 2 != 0;
}

Test(batch, pack_deliver_has_timestamp_and_internal_for_a_part_never_made)
{
    enum { N = 64 };
    int64_t ids[N];
    for (int i = 0; i < N; i++)
        ids[i] = i + 1;
    struct pr_request *call = call_of(PR_METHOD_BATCH_DELIVER, ids, N, "msg");
    const uint32_t nshards = 4, lost = 2;
    scatter_and_answer(call, nshards, deliver_by_parity, lost);
    request_set_result(call, MPIM__CODE__OK, NULL);
    call->timestamp = 1700000000123;
    cr_assert_eq(batch_pack(call), 0);
    Mpim__BatchDeliverResp *r = mpim__batch_deliver_resp__unpack(NULL, call->packed_len, call->packed);
    cr_assert_not_null(r);
    cr_assert_eq(r->timestamp, 1700000000123);
    cr_assert_eq(r->n_results, N);
    int internal = 0;
    for (int i = 0; i < N; i++) {
        const Mpim__DeliverEntry *e = r->results[i];
        cr_assert_eq(e->user_id, ids[i]);
        if (hash_shard(ids[i], nshards) == lost) {
            cr_assert_eq(e->code, MPIM__CODE__INTERNAL, "entry %d: its part was never made", i);
            cr_assert_not(e->delivered);
            internal++;
            continue;
        }
        cr_assert_eq(e->code, ids[i] % 5 == 0 ? MPIM__CODE__UNAVAILABLE : MPIM__CODE__OK, "entry %d", i);
        cr_assert_eq(e->delivered, ids[i] % 2 != 0);
    }
    cr_assert_gt(internal, 0, "shard %u got none of the ids", lost);
    mpim__batch_deliver_resp__free_unpacked(r, NULL);
    call_free(call);
    expect_no_leaks();
}

Test(batch, pack_empty_list)
{
    struct pr_request *call = call_of(PR_METHOD_BATCH_QUERY, NULL, 0, NULL);
    scatter_and_answer(call, 2, query_by_parity, UINT32_MAX);
    request_set_result(call, MPIM__CODE__OK, NULL);
    cr_assert_eq(batch_pack(call), 0);
    Mpim__BatchQueryRouteResp *r = mpim__batch_query_route_resp__unpack(NULL, call->packed_len, call->packed);
    cr_assert_not_null(r);
    cr_assert_not_null(r->result);
    cr_assert_eq(r->n_routes, 0);
    mpim__batch_query_route_resp__free_unpacked(r, NULL);
    call_free(call);
    expect_no_leaks();
}
