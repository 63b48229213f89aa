/* redis_result / redis_not_run: the one mapping of a Redis outcome to an answer code
 * (docs/failure-modes.md, "Redis" table). Replies are built by hand, as hiredis would. */
#include <string.h>

#include <criterion/criterion.h>

#include "presence.pb-c.h"
#include "shards/redis_result.h"

static redisReply reply_of(int type, const char *str)
{
    redisReply r = {.type = type};
    if (str != NULL) {
        r.str = (char *)str;
        r.len = strlen(str);
    }
    return r;
}

static int code_of_error(const char *err)
{
    redisReply r = reply_of(REDIS_REPLY_ERROR, err);
    return redis_result(LINK_REPLY, &r);
}

Test(redis_result, no_reply_is_unavailable)
{
    cr_assert_eq(redis_result(LINK_NOT_SENT, NULL), MPIM__CODE__UNAVAILABLE);
    cr_assert_eq(redis_result(LINK_LOST, NULL), MPIM__CODE__UNAVAILABLE);
}

Test(redis_result, any_reply_but_an_error_is_ok)
{
    const int types[] = {REDIS_REPLY_STRING, REDIS_REPLY_NIL, REDIS_REPLY_INTEGER, REDIS_REPLY_STATUS,
                         REDIS_REPLY_ARRAY};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        redisReply r = reply_of(types[i], types[i] == REDIS_REPLY_STRING ? "gw-1:1" : NULL);
        cr_assert_eq(redis_result(LINK_REPLY, &r), MPIM__CODE__OK, "reply type %d", types[i]);
    }
}

Test(redis_result, not_now_errors_are_unavailable)
{
    const char *errs[] = {
        "LOADING Redis is loading the dataset in memory",
        "READONLY You can't write against a read only replica.",
        "READONLY You can't write against a read only replica. script: 2920..., on @user_script:1.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
        "CLUSTERDOWN The cluster is down",
        "NOREPLICAS Not enough good replicas to write.",
        "LOADING",
    };
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
        cr_assert_eq(code_of_error(errs[i]), MPIM__CODE__UNAVAILABLE, "'%s'", errs[i]);
}

Test(redis_result, other_errors_are_internal)
{
    const char *errs[] = {
        "ERR wrong number of arguments for 'setex' command",
        "NOPERM this user has no permissions to run the 'setex' command",
        "WRONGTYPE Operation against a key holding the wrong kind of value",
        "NOSCRIPT No matching script. Please use EVAL.",
        "BUSYKEY Target key name already exists.", /* a longer word that starts like BUSY */
        "LOADINGX",
        "loading lower case is not Redis's",
        "",
    };
    for (size_t i = 0; i < sizeof(errs) / sizeof(errs[0]); i++)
        cr_assert_eq(code_of_error(errs[i]), MPIM__CODE__INTERNAL, "'%s'", errs[i]);
}

Test(redis_result, not_run_only_when_certain)
{
    redisReply err = reply_of(REDIS_REPLY_ERROR, "BUSY Redis is busy");
    redisReply ok = reply_of(REDIS_REPLY_INTEGER, NULL);
    cr_assert(redis_not_run(LINK_NOT_SENT, NULL));
    cr_assert(redis_not_run(LINK_REPLY, &err), "an error reply means Redis refused the command");
    cr_assert_not(redis_not_run(LINK_LOST, NULL), "a lost reply may have run");
    cr_assert_not(redis_not_run(LINK_REPLY, &ok));
}

Test(redis_result, a_script_number_is_read_from_an_integer_or_a_decimal_string)
{
    int64_t v = 0;
    redisReply i = {.type = REDIS_REPLY_INTEGER, .integer = 42};
    cr_assert(redis_reply_int(&i, &v));
    cr_assert_eq(v, 42);
    redisReply s = reply_of(REDIS_REPLY_STRING, "1732912345678901");
    cr_assert(redis_reply_int(&s, &v));
    cr_assert_eq(v, 1732912345678901LL);
    const char *bad[] = {"", "12x", "x", "123456789012345678901"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        redisReply b = reply_of(REDIS_REPLY_STRING, bad[k]);
        cr_assert_not(redis_reply_int(&b, &v), "'%s'", bad[k]);
    }
    redisReply nil = {.type = REDIS_REPLY_NIL};
    cr_assert_not(redis_reply_int(&nil, &v));
}
