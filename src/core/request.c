/* Helpers on struct pr_request. Called by whichever thread owns the request at that moment. */
#include "core/request.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/batch.h"
#include "presence.pb-c.h"

_Static_assert(MPIM__CODE__OVERLOADED + 1 == PR_CODE_COUNT, "PR_CODE_COUNT must cover Mpim__Code");

void request_set_result(struct pr_request *req, int code, const char *fmt, ...)
{
    req->code = (uint8_t)code;
    req->msg[0] = '\0';
    if (fmt != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(req->msg, sizeof(req->msg), fmt, ap);
        va_end(ap);
    }
}

void request_reset(struct pr_request *req)
{
    if (req->args != NULL)
        protobuf_c_message_free_unpacked(req->args, &req->arena.allocator);
    if (req->route != req->route_inline)
        free(req->route);
    free(req->packed);
    session_list_free(req->sessions);
    batch_free(req->batch);
    /* The arena's storage needs no clearing: it is carved afresh for every decode. */
    memset(req, 0, offsetof(struct pr_request, arena_buf));
}

const char *request_method_name(int method)
{
    static const char *const names[PR_METHOD_COUNT] = {
        [PR_METHOD_BIND] = "BindRoute",
        [PR_METHOD_QUERY] = "QueryRoute",
        [PR_METHOD_DELIVER] = "Deliver",
        [PR_METHOD_UNBIND] = "UnbindRoute",
        [PR_METHOD_HEARTBEAT] = "Heartbeat",
        [PR_METHOD_STATS] = "Stats",
        [PR_METHOD_BATCH_QUERY] = "BatchQueryRoute",
        [PR_METHOD_BATCH_DELIVER] = "BatchDeliver",
        [PR_METHOD_GATEWAY_HEARTBEAT] = "GatewayHeartbeat",
        [PR_METHOD_DRAIN_GATEWAY] = "DrainGateway",
    };
    return method >= 0 && method < PR_METHOD_COUNT ? names[method] : "?";
}

const char *request_code_name(int code)
{
    static const char *const names[PR_CODE_COUNT] = {
        [MPIM__CODE__OK] = "OK",
        [MPIM__CODE__INVALID] = "INVALID",
        [MPIM__CODE__NOT_FOUND] = "NOT_FOUND",
        [MPIM__CODE__INTERNAL] = "INTERNAL",
        [MPIM__CODE__UNAVAILABLE] = "UNAVAILABLE",
        [MPIM__CODE__OVERLOADED] = "OVERLOADED",
    };
    return code >= 0 && code < PR_CODE_COUNT ? names[code] : "UNKNOWN";
}
