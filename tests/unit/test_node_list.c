/* node_list_parse: the `nodes` key (sentinels, cluster seeds). */
#include <criterion/criterion.h>

#include "core/node_list.h"

Test(node_list, several_nodes_with_blanks)
{
    struct cluster_addr a[NODE_LIST_MAX];
    int n;
    char err[128];
    cr_assert_eq(node_list_parse(" 127.0.0.1:26379, localhost:26380 ,10.0.0.7:1", a, NODE_LIST_MAX, &n, err,
                                 sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 3);
    cr_assert_str_eq(a[0].host, "127.0.0.1");
    cr_assert_eq(a[0].port, 26379);
    cr_assert_str_eq(a[1].host, "localhost");
    cr_assert_eq(a[1].port, 26380);
    cr_assert_str_eq(a[2].host, "10.0.0.7");
    cr_assert_eq(a[2].port, 1);
}

Test(node_list, ipv6_with_and_without_brackets)
{
    struct cluster_addr a[2];
    int n;
    char err[128];
    cr_assert_eq(node_list_parse("[::1]:7000,::1:7001", a, 2, &n, err, sizeof(err)), 0, "%s", err);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(a[0].host, "::1");
    cr_assert_eq(a[0].port, 7000);
    cr_assert_str_eq(a[1].host, "::1");
    cr_assert_eq(a[1].port, 7001);
}

Test(node_list, bad_lists_are_refused_with_a_reason)
{
    const char *bad[] = {"", " ", "host", "host:", ":6379", "host:0", "host:65536", "host:12x",
                         "a:1,", "a:1,,b:2", "[]:1", "host:-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct cluster_addr a[NODE_LIST_MAX];
        int n;
        char err[128] = "";
        cr_assert_eq(node_list_parse(bad[i], a, NODE_LIST_MAX, &n, err, sizeof(err)), -1, "'%s' accepted", bad[i]);
        cr_assert_neq(err[0], '\0', "'%s' refused without a reason", bad[i]);
    }
}

Test(node_list, at_most_max_nodes)
{
    struct cluster_addr a[2];
    int n;
    char err[128];
    cr_assert_eq(node_list_parse("a:1,b:2", a, 2, &n, err, sizeof(err)), 0);
    cr_assert_eq(node_list_parse("a:1,b:2,c:3", a, 2, &n, err, sizeof(err)), -1);
    cr_assert_not_null(strstr(err, "more than 2"), "%s", err);
}
