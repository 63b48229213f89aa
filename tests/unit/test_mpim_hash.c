/* mpim_std_hash / mpim_gateway_channel: MPIM's gateway channel (issue #12, contract §9). */
#include <string.h>

#include <criterion/criterion.h>

#include "core/mpim_hash.h"
#include "std_hash_cases.h" /* made by gen_std_hash (g++) in this build */

Test(mpim_hash, the_values_mpim_gateways_use)
{
    /* From the issue, g++ 12 on x86-64: gateway id, std::hash, channel. */
    static const struct {
        const char *id;
        unsigned long long hash;
        unsigned channel;
    } known[] = {
        {"", 6142509188972423790ull, 33790},
        {"gw-1:7000", 12605804204201016973ull, 26973},
        {"127.0.0.1:9000", 16067264151966542095ull, 52095},
        {"gateway-a", 5391520552840974928ull, 34928},
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        size_t len = strlen(known[i].id);
        cr_assert_eq(mpim_std_hash(known[i].id, len), known[i].hash, "'%s'", known[i].id);
        cr_assert_eq(mpim_gateway_channel(known[i].id, len), known[i].channel, "'%s'", known[i].id);
    }
}

Test(mpim_hash, agrees_with_libstdcxx_on_every_length_and_byte)
{
    size_t n = sizeof(std_hash_cases) / sizeof(std_hash_cases[0]);
    cr_assert_geq(n, 300u);
    for (size_t i = 0; i < n; i++) {
        const struct std_hash_case *c = &std_hash_cases[i];
        cr_assert_eq(mpim_std_hash(c->bytes, c->len), c->hash, "case %zu (%u bytes)", i, c->len);
        unsigned channel = mpim_gateway_channel(c->bytes, c->len);
        cr_assert(channel >= 10000 && channel < 60000 && channel == 10000 + c->hash % 50000, "case %zu", i);
    }
}
