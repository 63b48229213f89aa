/* Contract §1 pipelining: any number of requests without waiting, answers in request order on
 * each connection whichever shard served them, and requests for one user executed in the order
 * sent. Checked against a model of the expected answers. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

TestSuite(pipeline, .init = fx_init_redis, .fini = fx_fini, .timeout = IT_TIMEOUT);

static void start_with_shards(int shards)
{
    it_config_set(&FX.cfg, "presence_service", "thread_count", "%d", shards);
    fx_start_server();
}

/* ---------------------------------------------------------------- the model */

/* Expected state of a few users and the answer each request must get. */
struct model {
    int64_t first_uid; /* users first_uid .. first_uid + nusers - 1 */
    int nusers;
    int *route;   /* per user: generation of its current gateway, -1 none */
    uint64_t rng; /* xorshift state */
};

struct op {
    int method; /* enum pr_method */
    int64_t uid;
    char gw[48];      /* Bind/Unbind/Heartbeat */
    int want_code;    /* expected Result.code */
    bool want_flag;   /* is_online / delivered / unbound / refreshed */
    char want_gw[48]; /* Query: expected gateway_addr ("" none) */
};

static uint64_t next_rand(struct model *m)
{
    m->rng ^= m->rng << 13;
    m->rng ^= m->rng >> 7;
    m->rng ^= m->rng << 17;
    return m->rng;
}

static void gateway_name(char *out, size_t n, int64_t uid, int gen)
{
    snprintf(out, n, "gw-%lld-%d:7000", (long long)uid, gen);
}

/* Draw the next request and predict its answer. Deliver has no subscriber: OK not delivered. */
static void model_next(struct model *m, int index, struct op *op)
{
    int u = (int)(next_rand(m) % (uint64_t)m->nusers);
    int kind = (int)(next_rand(m) % 100);
    bool coin = next_rand(m) % 4 != 0; /* mostly the current gateway, sometimes a stale one */
    memset(op, 0, sizeof(*op));
    op->uid = m->first_uid + u;
    int cur = m->route[u];
    char curgw[48] = "";
    if (cur >= 0)
        gateway_name(curgw, sizeof(curgw), op->uid, cur);

    if (kind < 25) {
        op->method = PR_METHOD_BIND;
        gateway_name(op->gw, sizeof(op->gw), op->uid, index);
        op->want_code = MPIM__CODE__OK;
        m->route[u] = index;
    } else if (kind < 50) {
        op->method = PR_METHOD_QUERY;
        op->want_code = cur >= 0 ? MPIM__CODE__OK : MPIM__CODE__NOT_FOUND;
        op->want_flag = cur >= 0;
        snprintf(op->want_gw, sizeof(op->want_gw), "%s", curgw);
    } else if (kind < 65) {
        op->method = PR_METHOD_DELIVER;
        op->want_code = cur >= 0 ? MPIM__CODE__OK : MPIM__CODE__NOT_FOUND;
        op->want_flag = false;
    } else {
        op->method = kind < 80 ? PR_METHOD_UNBIND : PR_METHOD_HEARTBEAT;
        bool match = cur >= 0 && coin;
        if (match)
            snprintf(op->gw, sizeof(op->gw), "%s", curgw);
        else
            gateway_name(op->gw, sizeof(op->gw), op->uid, 1000000 + index); /* stale */
        op->want_code = MPIM__CODE__OK;
        op->want_flag = match;
        if (match && op->method == PR_METHOD_UNBIND)
            m->route[u] = -1;
    }
}

static int send_op(struct pc_client *c, const struct op *op)
{
    switch (op->method) {
    case PR_METHOD_BIND: {
        Mpim__BindRouteReq r = MPIM__BIND_ROUTE_REQ__INIT;
        r.user_id = op->uid;
        r.gateway_addr = it_bytes(op->gw);
        return pc_send(c, op->method, &r.base);
    }
    case PR_METHOD_QUERY: {
        Mpim__QueryRouteReq r = MPIM__QUERY_ROUTE_REQ__INIT;
        r.user_id = op->uid;
        return pc_send(c, op->method, &r.base);
    }
    case PR_METHOD_DELIVER: {
        Mpim__DeliverReq r = MPIM__DELIVER_REQ__INIT;
        r.user_id = op->uid;
        r.message = it_bytes("ping");
        return pc_send(c, op->method, &r.base);
    }
    case PR_METHOD_UNBIND: {
        Mpim__UnbindRouteReq r = MPIM__UNBIND_ROUTE_REQ__INIT;
        r.user_id = op->uid;
        r.gateway_addr = it_bytes(op->gw);
        return pc_send(c, op->method, &r.base);
    }
    default: {
        Mpim__HeartbeatReq r = MPIM__HEARTBEAT_REQ__INIT;
        r.user_id = op->uid;
        r.gateway_addr = it_bytes(op->gw);
        return pc_send(c, op->method, &r.base);
    }
    }
}

/* Compare one answer with the prediction; on mismatch describe it in why and return false. */
static bool check_answer(const struct op *op, const ProtobufCMessage *m, int index, char *why, size_t n)
{
    const Mpim__Result *res = NULL;
    bool flag = false;
    ProtobufCBinaryData gw = {0, NULL};
    switch (op->method) {
    case PR_METHOD_BIND: {
        const Mpim__BindRouteResp *r = (const Mpim__BindRouteResp *)m;
        res = r->result;
        break;
    }
    case PR_METHOD_QUERY: {
        const Mpim__QueryRouteResp *r = (const Mpim__QueryRouteResp *)m;
        res = r->result;
        flag = r->is_online;
        gw = r->gateway_addr;
        break;
    }
    case PR_METHOD_DELIVER: {
        const Mpim__DeliverResp *r = (const Mpim__DeliverResp *)m;
        res = r->result;
        flag = r->delivered;
        break;
    }
    case PR_METHOD_UNBIND: {
        const Mpim__UnbindRouteResp *r = (const Mpim__UnbindRouteResp *)m;
        res = r->result;
        flag = r->unbound;
        break;
    }
    default: {
        const Mpim__HeartbeatResp *r = (const Mpim__HeartbeatResp *)m;
        res = r->result;
        flag = r->refreshed;
        break;
    }
    }
    int code = res != NULL ? (int)res->code : 0;
    bool ok = code == op->want_code && (op->method == PR_METHOD_BIND || flag == op->want_flag);
    if (op->method == PR_METHOD_QUERY)
        ok = ok && it_bytes_eq(gw, op->want_gw);
    if (!ok)
        snprintf(why, n,
                 "answer %d (%s uid %lld gw '%s'): got %s flag=%d gw='%.*s' msg='%s'; want %s "
                 "flag=%d gw='%s'",
                 index, request_method_name(op->method), (long long)op->uid, op->gw, pc_code_name(code), flag,
                 (int)gw.len, gw.data ? (const char *)gw.data : "", res && res->msg ? res->msg : "",
                 pc_code_name(op->want_code), op->want_flag, op->want_gw);
    return ok;
}

/* Run n model requests over one connection in one pipeline; 0 if every answer matched. */
static int run_pipeline(struct pc_client *c, struct model *m, int n, char *why, size_t whylen)
{
    struct op *ops = calloc((size_t)n, sizeof(*ops));
    if (ops == NULL)
        return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        model_next(m, i, &ops[i]);
        if (send_op(c, &ops[i]) < 0) {
            snprintf(why, whylen, "pc_send: %s", pc_error(c));
            rc = -1;
        }
    }
    if (rc == 0 && pc_flush(c) < 0) {
        snprintf(why, whylen, "pc_flush: %s", pc_error(c));
        rc = -1;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        ProtobufCMessage *resp = NULL;
        if (pc_recv(c, ops[i].method, &resp) < 0) {
            snprintf(why, whylen, "answer %d of %d: %s", i, n, pc_error(c));
            rc = -1;
            break;
        }
        if (!check_answer(&ops[i], resp, i, why, whylen))
            rc = -1;
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    free(ops);
    return rc;
}

/* Redis holds what the model says for each user. */
static void expect_redis_matches(const struct model *m)
{
    redisContext *r = it_rconnect(FX.cache.port, 0);
    for (int u = 0; u < m->nusers; u++) {
        int64_t uid = m->first_uid + u;
        redisReply *rep = redisCommand(r, "GET user:route:%lld", (long long)uid);
        cr_assert_not_null(rep);
        if (m->route[u] < 0) {
            cr_assert_eq(rep->type, REDIS_REPLY_NIL, "user %lld should have no route, has '%s'",
                         (long long)uid, rep->str);
        } else {
            char gw[48];
            gateway_name(gw, sizeof(gw), uid, m->route[u]);
            cr_assert_eq(rep->type, REDIS_REPLY_STRING, "user %lld has no route, want %s", (long long)uid,
                         gw);
            cr_assert_str_eq(rep->str, gw, "user %lld", (long long)uid);
        }
        freeReplyObject(rep);
    }
    redisFree(r);
}

static void mixed_pipeline(int shards)
{
    start_with_shards(shards);
    enum { USERS = 500, REQUESTS = 2000 };
    struct model m = {.first_uid = 1000, .nusers = USERS, .rng = 0x9e3779b97f4a7c15ULL};
    m.route = malloc(USERS * sizeof(int));
    cr_assert_not_null(m.route);
    for (int u = 0; u < USERS; u++)
        m.route[u] = -1;
    struct pc_client *c = it_connect();
    char why[512] = "";
    /* Two rounds on the same connection: the second starts from the state the first left. */
    for (int round = 0; round < 2; round++)
        cr_assert_eq(run_pipeline(c, &m, REQUESTS, why, sizeof(why)), 0, "round %d with %d shards: %s", round,
                     shards, why);
    expect_redis_matches(&m);
    free(m.route);
    pc_close(c);
}

IT(pipeline, mixed_pipeline_answered_in_order_with_one_shard)
{
    mixed_pipeline(1);
}

IT(pipeline, mixed_pipeline_answered_in_order_with_eight_shards)
{
    mixed_pipeline(8);
}

IT(pipeline, bind_then_query_of_same_user_in_one_pipeline_sees_the_bind)
{
    start_with_shards(8);
    struct pc_client *c = it_connect();
    /* The lifecycle of 100 users, all in one write; each user's steps must run in order. */
    enum { USERS = 100, STEPS = 7 };
    for (int u = 1; u <= USERS; u++) {
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%d:1", u);
        Mpim__BindRouteReq b = MPIM__BIND_ROUTE_REQ__INIT;
        b.user_id = u;
        b.gateway_addr = it_bytes(gw);
        Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
        q.user_id = u;
        Mpim__DeliverReq d = MPIM__DELIVER_REQ__INIT;
        d.user_id = u;
        d.message = it_bytes("m");
        Mpim__HeartbeatReq h = MPIM__HEARTBEAT_REQ__INIT;
        h.user_id = u;
        h.gateway_addr = it_bytes(gw);
        Mpim__UnbindRouteReq x = MPIM__UNBIND_ROUTE_REQ__INIT;
        x.user_id = u;
        x.gateway_addr = it_bytes(gw);
        cr_assert_eq(pc_send(c, PR_METHOD_BIND, &b.base), 0);
        cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
        cr_assert_eq(pc_send(c, PR_METHOD_DELIVER, &d.base), 0);
        cr_assert_eq(pc_send(c, PR_METHOD_HEARTBEAT, &h.base), 0);
        cr_assert_eq(pc_send(c, PR_METHOD_UNBIND, &x.base), 0);
        cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
        cr_assert_eq(pc_send(c, PR_METHOD_DELIVER, &d.base), 0);
    }
    cr_assert_eq(pc_flush(c), 0, "%s", pc_error(c));
    for (int u = 1; u <= USERS; u++) {
        char gw[32];
        snprintf(gw, sizeof(gw), "gw-%d:1", u);
        Mpim__BindRouteResp *b = (Mpim__BindRouteResp *)it_recv(c, PR_METHOD_BIND);
        cr_assert_eq(b->result->code, MPIM__CODE__OK, "user %d bind", u);
        it_free(b);
        Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
        cr_assert_eq(q->result->code, MPIM__CODE__OK, "user %d: query after bind got %s", u,
                     pc_code_name(q->result->code));
        cr_assert(it_bytes_eq(q->gateway_addr, gw), "user %d: query after bind", u);
        it_free(q);
        Mpim__DeliverResp *d = (Mpim__DeliverResp *)it_recv(c, PR_METHOD_DELIVER);
        cr_assert_eq(d->result->code, MPIM__CODE__OK, "user %d: deliver after bind got %s", u,
                     pc_code_name(d->result->code));
        it_free(d);
        Mpim__HeartbeatResp *h = (Mpim__HeartbeatResp *)it_recv(c, PR_METHOD_HEARTBEAT);
        cr_assert(h->refreshed, "user %d: heartbeat after bind not refreshed", u);
        it_free(h);
        Mpim__UnbindRouteResp *x = (Mpim__UnbindRouteResp *)it_recv(c, PR_METHOD_UNBIND);
        cr_assert(x->unbound, "user %d: unbind after bind not unbound", u);
        it_free(x);
        q = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
        cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "user %d: query after unbind got %s", u,
                     pc_code_name(q->result->code));
        it_free(q);
        d = (Mpim__DeliverResp *)it_recv(c, PR_METHOD_DELIVER);
        cr_assert_eq(d->result->code, MPIM__CODE__NOT_FOUND, "user %d: deliver after unbind got %s", u,
                     pc_code_name(d->result->code));
        it_free(d);
    }
    cr_assert_eq(it_rdbsize_all(FX.cache.port), 0);
    pc_close(c);
}

IT(pipeline, answers_wait_behind_a_slow_request)
{
    /* A Deliver whose route exists (publish round trip) followed by Queries of other users: the
     * fast answers must still come back after the Deliver's, in request order. */
    start_with_shards(4);
    struct pc_client *c = it_connect();
    Mpim__BindRouteResp *b = it_bind(c, 1, "gw-1:1");
    cr_assert_eq(b->result->code, MPIM__CODE__OK);
    it_free(b);
    for (int round = 0; round < 50; round++) {
        Mpim__DeliverReq d = MPIM__DELIVER_REQ__INIT;
        d.user_id = 1;
        d.message = it_bytes("x");
        cr_assert_eq(pc_send(c, PR_METHOD_DELIVER, &d.base), 0);
        for (int k = 2; k < 12; k++) {
            Mpim__QueryRouteReq q = MPIM__QUERY_ROUTE_REQ__INIT;
            q.user_id = k;
            cr_assert_eq(pc_send(c, PR_METHOD_QUERY, &q.base), 0);
        }
    }
    cr_assert_eq(pc_flush(c), 0);
    for (int round = 0; round < 50; round++) {
        Mpim__DeliverResp *d = (Mpim__DeliverResp *)it_recv(c, PR_METHOD_DELIVER);
        cr_assert_eq(d->result->code, MPIM__CODE__OK, "round %d: deliver answer out of place (%s)", round,
                     pc_code_name(d->result->code));
        cr_assert_gt(d->timestamp, 0, "round %d: deliver answer out of place", round);
        it_free(d);
        for (int k = 2; k < 12; k++) {
            Mpim__QueryRouteResp *q = (Mpim__QueryRouteResp *)it_recv(c, PR_METHOD_QUERY);
            cr_assert_eq(q->result->code, MPIM__CODE__NOT_FOUND, "round %d query %d: got %s", round, k,
                         pc_code_name(q->result->code));
            it_free(q);
        }
    }
    pc_close(c);
}

/* --------------------------------------------------- many connections at once */

struct worker {
    pthread_t thread;
    int port;
    int index;
    int failed;    /* 0 all answers matched */
    char why[512]; /* first mismatch */
    struct model m;
    int route[16];
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    const char *err = NULL;
    struct pc_client *c = pc_connect("127.0.0.1", w->port, 10000 * IT_SLOW, &err);
    if (c == NULL) {
        w->failed = 1;
        snprintf(w->why, sizeof(w->why), "connect: %s", err ? err : "?");
        return NULL;
    }
    w->m.first_uid = 100000 + (int64_t)w->index * 100;
    w->m.nusers = 16;
    w->m.route = w->route;
    w->m.rng = 0x2545F4914F6CDD1DULL + (uint64_t)w->index * 7919;
    for (int u = 0; u < 16; u++)
        w->route[u] = -1;
    for (int round = 0; round < 2 && !w->failed; round++)
        if (run_pipeline(c, &w->m, 150, w->why, sizeof(w->why)) != 0)
            w->failed = 1;
    pc_close(c);
    return NULL;
}

IT(pipeline, sixty_four_connections_pipelining_concurrently_all_correct)
{
    start_with_shards(4);
    enum { CONNS = 64 };
    struct worker *w = calloc(CONNS, sizeof(*w));
    cr_assert_not_null(w);
    for (int i = 0; i < CONNS; i++) {
        w[i].port = FX.srv.port;
        w[i].index = i;
        cr_assert_eq(pthread_create(&w[i].thread, NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < CONNS; i++)
        pthread_join(w[i].thread, NULL);
    int failures = 0, first = -1;
    for (int i = 0; i < CONNS; i++)
        if (w[i].failed) {
            failures++;
            if (first < 0)
                first = i;
        }
    cr_assert_eq(failures, 0, "%d of %d connections got a wrong answer; connection %d: %s", failures, CONNS,
                 first, first >= 0 ? w[first].why : "");
    for (int i = 0; i < CONNS; i++)
        expect_redis_matches(&w[i].m);
    free(w);
}
