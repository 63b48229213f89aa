/* What the generator asks: which method, which user, and the bytes of each request frame.
 * Pure functions on caller-owned state; every worker thread keeps its own copies of the
 * mutable parts (random state, scratch buffer), so nothing here is shared or locked. */
#ifndef BENCH_WORKLOAD_H
#define BENCH_WORKLOAD_H

#include <stddef.h>
#include <stdint.h>

#include "core/request.h"

/* splitmix64: tiny, fast, good enough to pick keys. */
static inline uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static inline double rng_double(uint64_t *state)
{
    return (double)(rng_next(state) >> 11) * 0x1.0p-53;
}

/* The five RPCs the generator drives: enum pr_method's first five values (the server may know
 * more methods, e.g. operators' ones, after them). */
#define BENCH_METHODS (PR_METHOD_HEARTBEAT + 1)
_Static_assert(PR_METHOD_BIND == 0 && PR_METHOD_QUERY == 1 && PR_METHOD_DELIVER == 2 && PR_METHOD_UNBIND == 3 &&
                   PR_METHOD_HEARTBEAT == 4,
               "the bench indexes its tables by these five methods");

/* --- user ids: uniform or zipfian over 1..n ------------------------------------------- */

enum keydist_kind { KEYDIST_UNIFORM, KEYDIST_ZIPF };

struct keydist {
    enum keydist_kind kind; /* uniform or zipf */
    uint64_t n;             /* ids are 1..n */
    double s;               /* zipf exponent (rank r has weight r^-s) */
    /* Rejection-inversion sampler constants (Hoermann & Derflinger 1996), zipf only. */
    double h_x1;            /* H(1.5) - 1 */
    double h_n;             /* H(n + 0.5) */
    double squeeze;         /* 2 - H^-1(H(2.5) - h(2)) */
};

/* spec: "uniform", "zipf" (s = 0.99) or "zipf:S". Returns 0, or -1 with err filled. */
int keydist_init(struct keydist *d, const char *spec, uint64_t n, char *err, size_t errlen);
/* The next user id, in 1..n; with zipf, id 1 is the most popular. */
int64_t keydist_next(const struct keydist *d, uint64_t *rng);
/* "uniform" or "zipf:0.99" into buf. */
const char *keydist_name(const struct keydist *d, char *buf, size_t len);

/* --- methods: one, or a weighted mix ---------------------------------------------------- */

struct method_mix {
    int count;                        /* methods in the mix (1 for a single method) */
    uint8_t method[BENCH_METHODS];  /* enum pr_method */
    uint32_t upto[BENCH_METHODS];   /* cumulative weights */
    uint32_t total;                   /* sum of the weights */
};

/* spec: "bind" | "query" | "deliver" | "unbind" | "heartbeat" | "mix=query:80,bind:10,...".
 * Returns 0, or -1 with err filled. */
int mix_parse(struct method_mix *m, const char *spec, char *err, size_t errlen);
int mix_next(const struct method_mix *m, uint64_t *rng);
/* Short lower-case name of a method ("query", ...), as accepted by mix_parse. */
const char *method_short_name(int method);
/* The spec back as text, into buf. */
const char *mix_name(const struct method_mix *m, char *buf, size_t len);

/* --- request frames --------------------------------------------------------------------- */

struct encoder {
    const char *service;     /* RpcHeader service_name */
    const char *gateway;     /* gateway_addr for bind, unbind, heartbeat */
    const uint8_t *message;  /* Deliver payload (shared, read-only) */
    size_t message_len;
    uint8_t *scratch;        /* this thread's buffer for the packed args */
    size_t scratch_cap;
    size_t max_frame;        /* the largest frame encoder_write can produce */
};

/* Set up e; allocates the scratch buffer. Returns 0 or -1 (out of memory). */
int encoder_init(struct encoder *e, const char *service, const char *gateway, const uint8_t *message,
                 size_t message_len);
void encoder_destroy(struct encoder *e);
/* Write the whole request frame for (method, uid) to out, which has room for e->max_frame
 * bytes. Returns the bytes written. No allocation. */
size_t encoder_write(struct encoder *e, int method, int64_t uid, uint8_t *out);

/* --- responses -------------------------------------------------------------------------- */

#define CODE_SLOTS (PR_CODE_COUNT + 1) /* Mpim__Code 0..5, and one slot for a code outside the enum */

/* Decode a response body as method's response type and check it answers (method, uid):
 * sets *code (0..CODE_SLOTS-1) and returns 0, or returns -1 when the body does not decode or
 * contradicts the request (a transport error). When the code is not OK, the Result message is
 * copied to msg (msglen bytes, NUL-terminated). No allocation for ordinary responses. */
int response_check(int method, int64_t uid, const uint8_t *body, size_t len, int *code, char *msg,
                   size_t msglen);

#endif
