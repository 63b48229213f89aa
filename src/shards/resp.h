/* Building Redis commands in RESP directly, for the hot path: hiredis' printf-style formatter
 * (vsnprintf per argument, an sds per command) was a third of the instructions per request.
 * One builder per shard, shard thread only; the finished command goes to link_send. */
#ifndef PR_SHARDS_RESP_H
#define PR_SHARDS_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct resp {
    char *buf;    /* the command being built */
    size_t len;   /* bytes used */
    size_t cap;   /* bytes allocated */
    bool failed;  /* out of memory: the command is incomplete and must not be sent */
};

int resp_init(struct resp *r);
void resp_free(struct resp *r);

/* Start a command of argc arguments (discarding what was built before). */
void resp_start(struct resp *r, int argc);
/* One argument: bytes as they are. */
void resp_arg(struct resp *r, const void *data, size_t len);
static inline void resp_arg_str(struct resp *r, const char *s)
{
    resp_arg(r, s, strlen(s));
}
/* One argument: prefix, a decimal number, sep, then tail bytes:
 * ("user:route:", 42, "", NULL, 0) -> "user:route:42"; ("", 42, ":", "gw", 2) -> "42:gw". */
void resp_arg_id(struct resp *r, const char *prefix, long long n, const char *sep, const void *tail,
                 size_t tlen);


#endif
