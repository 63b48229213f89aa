/* core/cluster_map: the slot map and its CLUSTER SLOTS parser. Replies are built by hand in the
 * shapes hiredis produces (heap trees, released with freeReplyObject); the layouts copy what a
 * real Redis 7.0.15 cluster answered. */
#include <criterion/criterion.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "core/cluster_map.h"
#include "leak.h"

/* --- reply builders --- */

static redisReply *rep(int type)
{
    redisReply *r = calloc(1, sizeof(*r));
    cr_assert_not_null(r);
    r->type = type;
    return r;
}

static redisReply *int_(long long v)
{
    redisReply *r = rep(REDIS_REPLY_INTEGER);
    r->integer = v;
    return r;
}

static redisReply *strn(int type, const char *s, size_t len)
{
    redisReply *r = rep(type);
    r->str = malloc(len + 1);
    cr_assert_not_null(r->str);
    memcpy(r->str, s, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static redisReply *str(const char *s)
{
    return strn(REDIS_REPLY_STRING, s, strlen(s));
}

static redisReply *nil(void)
{
    return rep(REDIS_REPLY_NIL);
}

/* An array of n elements given as arguments. */
static redisReply *arr(size_t n, ...)
{
    redisReply *r = rep(REDIS_REPLY_ARRAY);
    r->elements = n;
    if (n > 0) {
        r->element = calloc(n, sizeof(*r->element));
        cr_assert_not_null(r->element);
    }
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        r->element[i] = va_arg(ap, redisReply *);
    va_end(ap);
    return r;
}

/* A Redis 7.0 node entry: [host, port, id, metadata]. */
static redisReply *node7(const char *host, long long port, const char *id)
{
    return arr(4, str(host), int_(port), str(id), arr(0));
}

/* A 3.x-style node entry: [host, port]. */
static redisReply *node2(const char *host, long long port)
{
    return arr(2, str(host), int_(port));
}

#define ID_A "b2015ff93c8b989c1db5c0034c131d37a281aece"
#define ID_B "3a983c0e0f49f21921671bb65f7a5261fc9eddd1"
#define ID_C "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca"
#define ID_D "67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1"
#define ID_E "292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f"
#define ID_F "8bdbd5d4e8a5a6e0d4f5b0b5b1c4a3e9f1b2c3d4"

/* What a 3-master + 3-replica cluster made by `redis-cli --cluster create --cluster-replicas 1`
 * answers (Redis 7.0). */
static redisReply *three_masters(void)
{
    return arr(
        3, arr(4, int_(0), int_(5460), node7("127.0.0.1", 30001, ID_A), node7("127.0.0.1", 30005, ID_E)),
        arr(4, int_(5461), int_(10922), node7("127.0.0.1", 30002, ID_B), node7("127.0.0.1", 30006, ID_F)),
        arr(4, int_(10923), int_(16383), node7("127.0.0.1", 30003, ID_C), node7("127.0.0.1", 30004, ID_D)));
}

static struct cluster_map *new_map(void)
{
    struct cluster_map *m = malloc(sizeof(*m));
    cr_assert_not_null(m);
    cluster_map_init(m);
    return m;
}

static struct cluster_addr addr(const char *host, uint16_t port)
{
    struct cluster_addr a;
    cr_assert_eq(cluster_addr_set(&a, host, host ? strlen(host) : 0, port), 0);
    return a;
}

/* The port of the master serving slot (0 if none). */
static int port_of(const struct cluster_map *m, uint16_t slot)
{
    const struct cluster_addr *a = cluster_map_node(m, cluster_map_node_for_slot(m, slot));
    return a ? a->port : 0;
}

/* --- tests --- */

Test(cluster_map, init_is_empty)
{
    struct cluster_map *m = new_map();
    cr_assert_eq(m->nnodes, 0);
    for (unsigned s = 0; s < CLUSTER_SLOTS; s++)
        cr_assert_eq(cluster_map_node_for_slot(m, (uint16_t)s), -1);
    cr_assert_eq(cluster_map_node_for_slot(m, 16384), -1);
    cr_assert_null(cluster_map_node(m, 0));
    cr_assert_null(cluster_map_node(m, -1));
    free(m);
}

Test(cluster_map, parses_three_masters)
{
    struct cluster_map *m = new_map();
    redisReply *r = three_masters();
    char err[256] = "";
    cr_assert_eq(cluster_map_parse(m, r, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(m->nnodes, 3, "replicas are not nodes of the map");
    cr_assert_eq(port_of(m, 0), 30001);
    cr_assert_eq(port_of(m, 5460), 30001);
    cr_assert_eq(port_of(m, 5461), 30002);
    cr_assert_eq(port_of(m, 10922), 30002);
    cr_assert_eq(port_of(m, 10923), 30003);
    cr_assert_eq(port_of(m, 16383), 30003);
    const struct cluster_addr *a = cluster_map_node(m, cluster_map_node_for_slot(m, 12182));
    cr_assert_not_null(a);
    cr_assert_eq(a->kind, CLUSTER_HOST_NAMED);
    cr_assert_str_eq(a->host, "127.0.0.1");
    freeReplyObject(r);
    free(m);
    expect_no_leaks();
}

Test(cluster_map, masters_are_merged_by_address)
{
    /* After a resharding one master serves several ranges: one node, one connection. */
    struct cluster_map *m = new_map();
    redisReply *r = arr(3, arr(3, int_(0), int_(99), node2("10.0.0.1", 6379)),
                        arr(3, int_(100), int_(199), node2("10.0.0.2", 6379)),
                        arr(3, int_(200), int_(16383), node2("10.0.0.1", 6379)));
    cr_assert_eq(cluster_map_parse(m, r, NULL, 0), 0);
    cr_assert_eq(m->nnodes, 2);
    cr_assert_eq(cluster_map_node_for_slot(m, 0), cluster_map_node_for_slot(m, 16383));
    cr_assert_neq(cluster_map_node_for_slot(m, 0), cluster_map_node_for_slot(m, 150));
    freeReplyObject(r);
    free(m);
}

Test(cluster_map, uncovered_slots_stay_none)
{
    struct cluster_map *m = new_map();
    redisReply *r = arr(1, arr(3, int_(100), int_(200), node2("h", 7000)));
    cr_assert_eq(cluster_map_parse(m, r, NULL, 0), 0);
    cr_assert_eq(cluster_map_node_for_slot(m, 99), -1);
    cr_assert_eq(port_of(m, 100), 7000);
    cr_assert_eq(port_of(m, 200), 7000);
    cr_assert_eq(cluster_map_node_for_slot(m, 201), -1);
    freeReplyObject(r);
    free(m);
}

Test(cluster_map, empty_reply_uncovers_everything)
{
    struct cluster_map *m = new_map();
    redisReply *r = three_masters();
    cr_assert_eq(cluster_map_parse(m, r, NULL, 0), 0);
    redisReply *empty = arr(0);
    cr_assert_eq(cluster_map_parse(m, empty, NULL, 0), 0);
    cr_assert_eq(m->nnodes, 0);
    cr_assert_eq(cluster_map_node_for_slot(m, 0), -1);
    freeReplyObject(r);
    freeReplyObject(empty);
    free(m);
}

Test(cluster_map, endpoint_forms)
{
    /* As Redis 7.0.15 answered with cluster-preferred-endpoint-type unknown-endpoint (host NIL)
     * and hostname with no hostname set ("?"); both carried metadata ["ip", "127.0.0.1"]. */
    struct cluster_map *m = new_map();
    redisReply *r = arr(3,
                        arr(3, int_(0), int_(8191),
                            arr(4, nil(), int_(7001), str(ID_A), arr(2, str("ip"), str("127.0.0.1")))),
                        arr(3, int_(8192), int_(9000),
                            arr(4, str("?"), int_(7002), str(ID_B), arr(2, str("ip"), str("127.0.0.1")))),
                        arr(3, int_(9001), int_(16383), arr(3, str(""), int_(7003), str(ID_C))));
    char err[256] = "";
    cr_assert_eq(cluster_map_parse(m, r, err, sizeof(err)), 0, "%s", err);
    const struct cluster_addr *a = cluster_map_node(m, cluster_map_node_for_slot(m, 0));
    cr_assert_eq(a->kind, CLUSTER_HOST_SAME);
    cr_assert_str_eq(a->host, "");
    cr_assert_eq(a->port, 7001);
    a = cluster_map_node(m, cluster_map_node_for_slot(m, 8192));
    cr_assert_eq(a->kind, CLUSTER_HOST_UNKNOWN);
    cr_assert_str_eq(a->host, "");
    cr_assert_eq(a->port, 7002);
    a = cluster_map_node(m, cluster_map_node_for_slot(m, 16383));
    cr_assert_eq(a->kind, CLUSTER_HOST_SAME, "an empty host means the same as NIL");
    cr_assert_eq(a->port, 7003);
    freeReplyObject(r);
    free(m);
}

Test(cluster_map, ipv6_and_hostnames)
{
    struct cluster_map *m = new_map();
    redisReply *r = arr(2, arr(3, int_(0), int_(1), node2("::1", 7000)),
                        arr(3, int_(2), int_(3), node2("redis-0.redis.svc.cluster.local", 6379)));
    cr_assert_eq(cluster_map_parse(m, r, NULL, 0), 0);
    cr_assert_str_eq(cluster_map_node(m, cluster_map_node_for_slot(m, 0))->host, "::1");
    cr_assert_str_eq(cluster_map_node(m, cluster_map_node_for_slot(m, 3))->host,
                     "redis-0.redis.svc.cluster.local");
    freeReplyObject(r);
    free(m);
}

Test(cluster_map, indices_survive_a_refresh)
{
    /* A failover: 30002's replica 30006 takes over. 30001 and 30003 keep their index (and so the
     * holder's connections); 30002's index is freed and reused by the newcomer. */
    struct cluster_map *m = new_map();
    redisReply *r1 = three_masters();
    cr_assert_eq(cluster_map_parse(m, r1, NULL, 0), 0);
    int i1 = cluster_map_node_for_slot(m, 0), i2 = cluster_map_node_for_slot(m, 6000),
        i3 = cluster_map_node_for_slot(m, 16000);
    redisReply *r2 = arr(3, arr(3, int_(10923), int_(16383), node7("127.0.0.1", 30003, ID_C)),
                         arr(3, int_(5461), int_(10922), node7("127.0.0.1", 30006, ID_F)),
                         arr(3, int_(0), int_(5460), node7("127.0.0.1", 30001, ID_A)));
    cr_assert_eq(cluster_map_parse(m, r2, NULL, 0), 0);
    cr_assert_eq(cluster_map_node_for_slot(m, 0), i1);
    cr_assert_eq(cluster_map_node_for_slot(m, 16000), i3);
    cr_assert_eq(port_of(m, 6000), 30006);
    cr_assert_eq(cluster_map_node_for_slot(m, 6000), i2, "the freed index is reused");
    struct cluster_addr old = addr("127.0.0.1", 30002);
    cr_assert_eq(cluster_map_find(m, &old), -1);
    cr_assert_eq(m->nnodes, 3);
    freeReplyObject(r1);
    freeReplyObject(r2);
    free(m);
}

Test(cluster_map, departed_masters_are_dropped)
{
    struct cluster_map *m = new_map();
    redisReply *r1 = three_masters();
    cr_assert_eq(cluster_map_parse(m, r1, NULL, 0), 0);
    redisReply *r2 = arr(1, arr(3, int_(0), int_(16383), node7("127.0.0.1", 30001, ID_A)));
    cr_assert_eq(cluster_map_parse(m, r2, NULL, 0), 0);
    cr_assert_eq(m->nnodes, 1);
    cr_assert_null(cluster_map_node(m, 1));
    cr_assert_null(cluster_map_node(m, 2));
    cr_assert_eq(port_of(m, 16383), 30001);
    freeReplyObject(r1);
    freeReplyObject(r2);
    free(m);
}

Test(cluster_map, set_slot_moves_one_slot)
{
    struct cluster_map *m = new_map();
    redisReply *r = three_masters();
    cr_assert_eq(cluster_map_parse(m, r, NULL, 0), 0);
    /* MOVED to a known master: no new node. */
    struct cluster_addr b = addr("127.0.0.1", 30002);
    int ib = cluster_map_set_slot(m, 0, &b);
    cr_assert_eq(ib, cluster_map_node_for_slot(m, 5461));
    cr_assert_eq(port_of(m, 0), 30002);
    cr_assert_eq(port_of(m, 1), 30001, "only that slot moves");
    cr_assert_eq(m->nnodes, 3);
    /* MOVED to a node never seen: added. */
    struct cluster_addr n = addr("10.1.1.1", 7777);
    int in = cluster_map_set_slot(m, 16383, &n);
    cr_assert_eq(in, 3);
    cr_assert_eq(m->nnodes, 4);
    cr_assert_eq(port_of(m, 16383), 7777);
    cr_assert_eq(cluster_map_set_slot(m, 16384, &n), -1);
    freeReplyObject(r);
    free(m);
}

Test(cluster_map, set_slot_when_full)
{
    struct cluster_map *m = new_map();
    char host[32];
    for (unsigned i = 0; i < CLUSTER_MAP_MAX_NODES; i++) {
        snprintf(host, sizeof(host), "10.0.%u.%u", i / 256, i % 256);
        struct cluster_addr a = addr(host, 6379);
        cr_assert_eq(cluster_map_set_slot(m, (uint16_t)i, &a), (int)i);
    }
    struct cluster_addr extra = addr("10.9.9.9", 6379);
    cr_assert_eq(cluster_map_set_slot(m, 5000, &extra), -1);
    cr_assert_eq(cluster_map_node_for_slot(m, 5000), -1, "map unchanged");
    free(m);
}

/* --- malformed replies: -1, a message naming the problem, the map unchanged --- */

static void expect_rejected(redisReply *r, const char *needle)
{
    struct cluster_map *m = new_map();
    redisReply *good = three_masters();
    cr_assert_eq(cluster_map_parse(m, good, NULL, 0), 0);
    struct cluster_map *before = malloc(sizeof(*before));
    cr_assert_not_null(before);
    memcpy(before, m, sizeof(*m));
    char err[256] = "";
    cr_assert_eq(cluster_map_parse(m, r, err, sizeof(err)), -1, "accepted; wanted an error with '%s'",
                 needle);
    cr_assert(strstr(err, needle) != NULL, "error '%s' does not say '%s'", err, needle);
    cr_assert(memcmp(before, m, sizeof(*m)) == 0, "map changed by a rejected reply");
    freeReplyObject(good);
    if (r != NULL)
        freeReplyObject(r);
    free(before);
    free(m);
}

Test(cluster_map, rejects_no_reply)
{
    expect_rejected(NULL, "no reply");
}

Test(cluster_map, rejects_error_reply)
{
    const char *e = "ERR This instance has cluster support disabled";
    expect_rejected(strn(REDIS_REPLY_ERROR, e, strlen(e)), "cluster support disabled");
}

Test(cluster_map, rejects_non_array)
{
    expect_rejected(str("hello"), "string, not an array");
    expect_rejected(int_(3), "integer, not an array");
}

Test(cluster_map, rejects_bad_entries)
{
    expect_rejected(arr(1, int_(0)), "entry 0 is not an array");
    expect_rejected(arr(1, arr(2, int_(0), int_(1))), "entry 0 is not an array");
    expect_rejected(arr(2, arr(3, int_(0), int_(1), node2("h", 1)), NULL), "entry 1 is not an array");
}

Test(cluster_map, rejects_bad_slots)
{
    expect_rejected(arr(1, arr(3, int_(0), int_(16384), node2("h", 7000))),
                    "end slot 16384 outside 0..16383");
    expect_rejected(arr(1, arr(3, int_(-1), int_(5), node2("h", 7000))), "start slot -1 outside");
    expect_rejected(arr(1, arr(3, int_(20000), int_(20001), node2("h", 7000))), "start slot 20000 outside");
    expect_rejected(arr(1, arr(3, int_(10), int_(5), node2("h", 7000))), "start slot 10 > end slot 5");
    expect_rejected(arr(1, arr(3, str("0"), int_(5), node2("h", 7000))), "start slot is string");
    expect_rejected(arr(1, arr(3, int_(0), nil(), node2("h", 7000))), "end slot is nil");
}

Test(cluster_map, rejects_overlapping_ranges)
{
    expect_rejected(
        arr(2, arr(3, int_(0), int_(100), node2("a", 7000)), arr(3, int_(100), int_(200), node2("b", 7000))),
        "slot 100 listed twice");
}

Test(cluster_map, rejects_bad_nodes)
{
    expect_rejected(arr(1, arr(3, int_(0), int_(1), str("h:7000"))), "master is not an array");
    expect_rejected(arr(1, arr(3, int_(0), int_(1), arr(1, str("h")))), "master is not an array");
    expect_rejected(arr(1, arr(3, int_(0), int_(1), arr(2, int_(7000), str("h")))), "master host is integer");
    expect_rejected(arr(1, arr(3, int_(0), int_(1), arr(2, str("h"), str("7000")))), "master port is string");
    expect_rejected(arr(1, arr(3, int_(0), int_(1), arr(2, str("h"), int_(0)))),
                    "master address is unusable");
    expect_rejected(arr(1, arr(3, int_(0), int_(1), arr(2, str("h"), int_(65536)))),
                    "master address is unusable");
    expect_rejected(arr(1, arr(3, int_(0), int_(1), arr(3, str("h"), int_(1), int_(5)))),
                    "master node id is not");
    expect_rejected(arr(1, arr(3, int_(0), int_(1), arr(2, strn(REDIS_REPLY_STRING, "a\0b", 3), int_(1)))),
                    "master address is unusable");
    char longhost[300];
    memset(longhost, 'h', sizeof(longhost) - 1);
    longhost[sizeof(longhost) - 1] = '\0';
    expect_rejected(arr(1, arr(3, int_(0), int_(1), node2(longhost, 1))), "master address is unusable");
    /* A replica is not kept, but a malformed one still means the layout is not what we think. */
    expect_rejected(arr(1, arr(4, int_(0), int_(1), node2("h", 1), arr(2, str("r"), str("x")))),
                    "entry 0: replica port is string");
}

Test(cluster_map, rejects_too_many_masters)
{
    redisReply *r = rep(REDIS_REPLY_ARRAY);
    r->elements = CLUSTER_MAP_MAX_NODES + 1;
    r->element = calloc(r->elements, sizeof(*r->element));
    cr_assert_not_null(r->element);
    char host[32];
    for (size_t i = 0; i < r->elements; i++) {
        snprintf(host, sizeof(host), "10.0.%zu.%zu", i / 256, i % 256);
        r->element[i] = arr(3, int_((long long)i), int_((long long)i), node2(host, 6379));
    }
    expect_rejected(r, "more than 256 masters");
}

Test(cluster_map, reply_checked_fully_before_any_change)
{
    /* The bad entry comes last: the good ones before it must not have been applied. */
    expect_rejected(arr(2, arr(3, int_(0), int_(16383), node2("new", 1)), arr(3, int_(0), int_(0), int_(1))),
                    "entry 1: master is not an array");
}

Test(cluster_map, error_buffer_may_be_small)
{
    struct cluster_map *m = new_map();
    redisReply *r = int_(1);
    char err[8];
    cr_assert_eq(cluster_map_parse(m, r, err, sizeof(err)), -1);
    cr_assert_eq(strlen(err), sizeof(err) - 1);
    cr_assert_eq(cluster_map_parse(m, r, NULL, 0), -1);
    freeReplyObject(r);
    free(m);
}
