/* A user's sessions (contract §6) as they cross from a shard to the codec, and the format of one
 * session in Redis. Pure code, any thread: a shard builds a list from a Redis reply, the acceptor
 * encodes it and frees it with the request (request_reset).
 *
 * Storage (docs/contract.md, "Sessions"): one hash per user, user:sessions:<uid> (on a cluster
 * user:sessions:{<uid>}), field = device_id, value = "<epoch>|<platform>|<last_seen_ms>|<gateway>".
 * The gateway goes last because it may hold '|' (any printable ASCII); the others are decimal.
 * Redis 7.0 has no per-field expiry (HEXPIRE is 7.4), so liveness is the value's last_seen_ms:
 * a session is live while last_seen_ms + route_ttl * 1000 > now. */
#ifndef PR_CORE_SESSION_LIST_H
#define PR_CORE_SESSION_LIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "presence.pb-c.h"

#define SESSION_DEVICE_MAX 64

/* One session, its strings pointing into someone else's buffer (a Redis reply). */
struct session_view {
    const char *device;
    size_t device_len;
    const char *gateway;
    size_t gateway_len;
    int32_t platform;
    int64_t epoch;
    int64_t last_seen_ms;
};

/* The sessions of one answer, in one allocation: n Session messages, the pointer array protobuf-c
 * wants, and their strings. */
struct pr_sessions {
    size_t n;
    Mpim__Session **ptrs; /* n pointers into items, for the repeated field */
    size_t wire_bound;    /* an upper bound of their packed size, fields and tags included */
    Mpim__Session *items;
    char *pool;           /* NUL-terminated copies of the strings */
    size_t pool_used;
};

/* Parse a hash value "<epoch>|<platform>|<last_seen_ms>|<gateway>" into v (device untouched).
 * 0, or -1 if it is not in that form. */
int session_value_parse(const char *value, size_t len, struct session_view *v);

/* NULL if device is a valid device_id (0-64 bytes of [A-Za-z0-9._-]), else why not. */
const char *session_check_device(const char *device, size_t len);

/* A list with room for n sessions whose strings total string_bytes (NULs not counted); NULL
 * out of memory. Fill it with session_list_add, in the order they are to be sent. */
struct pr_sessions *session_list_new(size_t n, size_t string_bytes);
void session_list_add(struct pr_sessions *l, const struct session_view *v);
/* A copy of a filled list, in one allocation (no string is measured again); NULL out of memory. */
struct pr_sessions *session_list_clone(const struct pr_sessions *from);
void session_list_free(struct pr_sessions *l);

/* Sort views by epoch, highest first (QueryRoute's order). */
void session_views_sort(struct session_view *v, size_t n);

#endif
