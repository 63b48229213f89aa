/* core/request: the method and result-code names every label, CLI line and bench report uses. */
#include <criterion/criterion.h>

#include "core/request.h"
#include "presence.pb-c.h"

Test(request, code_names)
{
    cr_assert_str_eq(request_code_name(MPIM__CODE__OK), "OK");
    cr_assert_str_eq(request_code_name(MPIM__CODE__INVALID), "INVALID");
    cr_assert_str_eq(request_code_name(MPIM__CODE__NOT_FOUND), "NOT_FOUND");
    cr_assert_str_eq(request_code_name(MPIM__CODE__INTERNAL), "INTERNAL");
    cr_assert_str_eq(request_code_name(MPIM__CODE__UNAVAILABLE), "UNAVAILABLE");
    cr_assert_str_eq(request_code_name(MPIM__CODE__OVERLOADED), "OVERLOADED");
    cr_assert_str_eq(request_code_name(-1), "UNKNOWN");
    cr_assert_str_eq(request_code_name(PR_CODE_COUNT), "UNKNOWN");
    cr_assert_str_eq(request_code_name(1000), "UNKNOWN");
}

/* The table agrees with the proto's own spelling of every Mpim__Code, and covers all of them. */
Test(request, code_names_match_the_proto)
{
    cr_assert_eq(mpim__code__descriptor.n_values, PR_CODE_COUNT);
    for (unsigned i = 0; i < mpim__code__descriptor.n_values; i++) {
        const ProtobufCEnumValue *v = &mpim__code__descriptor.values[i];
        cr_assert_str_eq(request_code_name(v->value), v->name, "code %d", v->value);
    }
}

Test(request, method_names)
{
    static const char *const want[PR_METHOD_COUNT] = {"BindRoute",   "QueryRoute", "Deliver",
                                                      "UnbindRoute", "Heartbeat",  "Stats",
                                                      "BatchQueryRoute", "BatchDeliver", "GatewayHeartbeat",
                                                      "DrainGateway"};
    for (int m = 0; m < PR_METHOD_COUNT; m++)
        cr_assert_str_eq(request_method_name(m), want[m], "method %d", m);
    cr_assert_str_eq(request_method_name(-1), "?");
    cr_assert_str_eq(request_method_name(PR_METHOD_COUNT), "?");
}
