/* core/cluster_redirect: MOVED / ASK parsing and the retryable cluster errors. The error texts are
 * the ones Redis 7.0.15 sends (MOVED forms seen with each cluster-preferred-endpoint-type). */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "core/cluster_redirect.h"

/* Classify from an exact-size heap copy without a NUL, so ASan catches a read past len. */
static enum cluster_error classify(const char *s, struct cluster_redirect *out)
{
    size_t len = strlen(s);
    char *copy = malloc(len > 0 ? len : 1);
    cr_assert_not_null(copy);
    memcpy(copy, s, len);
    enum cluster_error e = cluster_error_classify(copy, len, out);
    free(copy);
    return e;
}

Test(cluster_redirect, moved_ip)
{
    struct cluster_redirect r;
    cr_assert_eq(classify("MOVED 12182 127.0.0.1:35217", &r), CLUSTER_ERR_MOVED);
    cr_assert_eq(r.slot, 12182);
    cr_assert_eq(r.to.kind, CLUSTER_HOST_NAMED);
    cr_assert_str_eq(r.to.host, "127.0.0.1");
    cr_assert_eq(r.to.port, 35217);
}

Test(cluster_redirect, ask_ip)
{
    struct cluster_redirect r;
    cr_assert_eq(classify("ASK 0 10.0.0.7:6379", &r), CLUSTER_ERR_ASK);
    cr_assert_eq(r.slot, 0);
    cr_assert_str_eq(r.to.host, "10.0.0.7");
    cr_assert_eq(r.to.port, 6379);
    cr_assert_eq(classify("ASK 16383 h:1", &r), CLUSTER_ERR_ASK);
    cr_assert_eq(r.slot, 16383);
    cr_assert_eq(r.to.port, 1);
}

Test(cluster_redirect, ipv6_splits_at_last_colon)
{
    struct cluster_redirect r;
    cr_assert_eq(classify("MOVED 3999 ::1:6381", &r), CLUSTER_ERR_MOVED);
    cr_assert_str_eq(r.to.host, "::1");
    cr_assert_eq(r.to.port, 6381);
    cr_assert_eq(classify("ASK 7 fe80::1:2:3:65535", &r), CLUSTER_ERR_ASK);
    cr_assert_str_eq(r.to.host, "fe80::1:2:3");
    cr_assert_eq(r.to.port, 65535);
    cr_assert_eq(classify("MOVED 1 [2001:db8::5]:7000", &r), CLUSTER_ERR_MOVED);
    cr_assert_str_eq(r.to.host, "2001:db8::5", "brackets are removed");
}

Test(cluster_redirect, hostname)
{
    struct cluster_redirect r;
    cr_assert_eq(classify("MOVED 42 redis-1.example.internal:6379", &r), CLUSTER_ERR_MOVED);
    cr_assert_eq(r.to.kind, CLUSTER_HOST_NAMED);
    cr_assert_str_eq(r.to.host, "redis-1.example.internal");
}

Test(cluster_redirect, empty_host_means_the_node_that_answered)
{
    /* Redis 7.0.15 with cluster-preferred-endpoint-type unknown-endpoint. */
    struct cluster_redirect r;
    cr_assert_eq(classify("MOVED 12182 :35217", &r), CLUSTER_ERR_MOVED);
    cr_assert_eq(r.to.kind, CLUSTER_HOST_SAME);
    cr_assert_str_eq(r.to.host, "");
    cr_assert_eq(r.to.port, 35217);
}

Test(cluster_redirect, question_mark_host_is_unknown)
{
    /* Redis 7.0.15 with cluster-preferred-endpoint-type hostname and no hostname announced. */
    struct cluster_redirect r;
    cr_assert_eq(classify("MOVED 12182 ?:35217", &r), CLUSTER_ERR_MOVED);
    cr_assert_eq(r.to.kind, CLUSTER_HOST_UNKNOWN);
    cr_assert_str_eq(r.to.host, "");
    cr_assert_eq(r.to.port, 35217);
}

Test(cluster_redirect, retryable_errors)
{
    const char *errs[] = {
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
        "CLUSTERDOWN Hash slot not served",
        "CLUSTERDOWN The cluster is down and only accepts read commands",
        "LOADING Redis is loading the dataset in memory",
        "LOADING",
        "TRYAGAIN",
    };
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
        cr_assert_eq(classify(errs[i], NULL), CLUSTER_ERR_RETRY, "'%s'", errs[i]);
}

Test(cluster_redirect, other_errors)
{
    const char *errs[] = {
        "",
        "ERR unknown command",
        "CROSSSLOT Keys in request don't hash to the same slot",
        "READONLY You can't write against a read only replica.",
        "NOSCRIPT No matching script. Please use EVAL.",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "MOVEDX 1 h:1",
        "ASKING",
        "TRYAGAINX",
        "CLUSTERDOWNX",
        "LOADINGX",
        "moved 1 h:1", /* Redis sends the code in capitals */
    };
    struct cluster_redirect r;
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
        cr_assert_eq(classify(errs[i], &r), CLUSTER_ERR_OTHER, "'%s'", errs[i]);
    cr_assert_eq(cluster_error_classify(NULL, 0, &r), CLUSTER_ERR_OTHER);
}

Test(cluster_redirect, malformed_redirects_are_not_redirects)
{
    const char *errs[] = {
        "MOVED",
        "MOVED ",
        "MOVED 1",
        "MOVED 1 ",
        "MOVED 1 h",        /* no port */
        "MOVED 1 h:",       /* empty port */
        "MOVED 1 h:0",      /* port 0 */
        "MOVED 1 h:65536",  /* port > 65535 */
        "MOVED 1 h:123456", /* too many digits */
        "MOVED 1 h:-1",
        "MOVED 1 h:+1",
        "MOVED 1 h:1x",
        "MOVED 1 h:1 ", /* trailing bytes */
        "MOVED 1 h:1 extra",
        "MOVED 16384 h:1", /* slot > 16383 */
        "MOVED 99999 h:1",
        "MOVED 123456 h:1",
        "MOVED -1 h:1",
        "MOVED x h:1",
        "MOVED  1 h:1", /* double space: empty slot */
        "MOVED 1  h:1",
        "MOVED 1 []:1", /* brackets around nothing */
        "ASK",
        "ASK 1",
        "ASK 1 h",
        "ASK 20000 h:1",
        "ASK 1 h:70000",
        "ASK garbage",
        "MOVED\t1 h:1",
    };
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++) {
        struct cluster_redirect r = {.slot = 4242};
        cr_assert_eq(classify(errs[i], &r), CLUSTER_ERR_OTHER, "'%s'", errs[i]);
        cr_assert_eq(r.slot, 4242, "'%s' wrote out", errs[i]);
    }
}

Test(cluster_redirect, host_too_long_is_not_a_redirect)
{
    char buf[400];
    memcpy(buf, "MOVED 1 ", 8);
    memset(buf + 8, 'h', 300);
    memcpy(buf + 308, ":7000", 6); /* with its NUL */
    struct cluster_redirect r;
    cr_assert_eq(classify(buf, &r), CLUSTER_ERR_OTHER);
}

Test(cluster_redirect, nul_in_host_is_not_a_redirect)
{
    const char s[] = "MOVED 1 a\0b:7000";
    struct cluster_redirect r;
    cr_assert_eq(cluster_error_classify(s, sizeof(s) - 1, &r), CLUSTER_ERR_OTHER);
}
