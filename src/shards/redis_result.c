/* Any thread: pure functions of their arguments. */
#include "shards/redis_result.h"

#include <stdlib.h>
#include <string.h>

#include "presence.pb-c.h"

/* Error prefixes (the word before the first space) that mean "not now": the data set is loading,
 * this node is a replica or lost its master, a script is running, a cluster slot is moving or
 * down, or too few replicas are in sync. A retry later can succeed, so the client is told
 * UNAVAILABLE, not INTERNAL. */
static const char *const transient_errors[] = {
    "LOADING", "READONLY", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS",
};

static bool is_transient(const char *err, size_t len)
{
    for (size_t i = 0; i < sizeof(transient_errors) / sizeof(transient_errors[0]); i++) {
        size_t n = strlen(transient_errors[i]);
        /* The whole first word: "BUSYKEY" (RESTORE) is not "BUSY". */
        if (len >= n && memcmp(err, transient_errors[i], n) == 0 && (len == n || err[n] == ' '))
            return true;
    }
    return false;
}

int redis_result(enum link_status status, const redisReply *reply)
{
    if (status != LINK_REPLY || reply == NULL)
        return MPIM__CODE__UNAVAILABLE;
    if (reply->type != REDIS_REPLY_ERROR)
        return MPIM__CODE__OK;
    return is_transient(reply->str, reply->len) ? MPIM__CODE__UNAVAILABLE : MPIM__CODE__INTERNAL;
}

bool redis_not_run(enum link_status status, const redisReply *reply)
{
    return status == LINK_NOT_SENT || (status == LINK_REPLY && reply != NULL && reply->type == REDIS_REPLY_ERROR);
}

bool redis_reply_int(const redisReply *r, int64_t *out)
{
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = r->integer;
        return true;
    }
    if (r->type != REDIS_REPLY_STRING || r->len == 0 || r->len > 20)
        return false;
    char buf[24], *end;
    memcpy(buf, r->str, r->len);
    buf[r->len] = '\0';
    *out = strtoll(buf, &end, 10);
    return *end == '\0';
}

bool redis_noscript(enum link_status status, const redisReply *reply)
{
    return status == LINK_REPLY && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0;
}
