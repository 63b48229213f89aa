/* The near cache's table (contract §11, docs/near-cache.md): what one shard remembers of the
 * routes it read, keyed by user id. Pure data structure with a single owner (the shard thread
 * that made it); no locks, no clock of its own (the caller passes monotonic milliseconds), no
 * Redis. Freshness is the caller's job (shards/route_cache.c): this only keeps the rules that make
 * it possible --
 *  - a fetch is announced before it is sent (begin_fetch) and cached only if nothing cancelled
 *    it meanwhile (complete_fetch with its token): an invalidation that overtakes the reply it
 *    races (invalidate), or a flush (clear, which also bumps the generation in every token);
 *  - an entry is served only before its deadline (lookup drops an expired one);
 *  - at most `capacity` entries; when full, CLOCK evicts one (second chance on a recent hit).
 *
 * An entry: READY (a cached answer) or FETCHING (a read in flight); the route bytes (absent: the
 * user is offline), the live sessions (a pr_sessions the cache owns; each hit gets its own copy,
 * because the acceptor encodes and frees req->sessions), the deadline and the Redis node (cluster
 * map index, 0 otherwise) whose tracking covers it. */
#ifndef PR_CORE_NEAR_CACHE_H
#define PR_CORE_NEAR_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/session_list.h"

#define NEAR_CACHE_MAX 10000000 /* [route] near_cache: entries per shard */
#define NC_ROUTE_INLINE 40      /* routes this long or shorter live in the entry itself */

enum nc_state {
    NC_FREE,     /* not in the table */
    NC_FETCHING, /* a read is in flight; not served */
    NC_READY,    /* served until deadline_ms */
};

struct nc_entry {
    int64_t uid;
    uint64_t token;              /* the fetch that may fill it: generation << 32 | sequence */
    int64_t deadline_ms;         /* READY: served while now_ms < deadline_ms */
    struct pr_sessions *sessions; /* live sessions, highest epoch first; NULL: none */
    uint32_t next;               /* hash chain (entry index + 1; 0 ends it), or the free list */
    uint32_t route_len;
    uint16_t node;               /* the Redis node that tracks it */
    uint8_t state;               /* enum nc_state */
    uint8_t ref;                 /* CLOCK: hit since the hand last passed */
    bool has_route;              /* false: offline */
    union {
        char in[NC_ROUTE_INLINE];
        char *heap;              /* malloc'd when route_len > NC_ROUTE_INLINE */
    } route;
};

/* What a completed fetch found. */
struct nc_value {
    const char *route; /* NULL: no route (offline) */
    size_t route_len;
    struct pr_sessions *sessions; /* taken by the cache only if complete_fetch returns 1 */
    int64_t deadline_ms;
    uint16_t node;
};

struct near_cache;

/* capacity 1..NEAR_CACHE_MAX. NULL out of memory. */
struct near_cache *near_cache_new(uint32_t capacity);
void near_cache_free(struct near_cache *nc);

/* The READY entry of uid whose deadline is after now_ms, or NULL (an expired one is dropped).
 * Valid until the next call that changes the table. */
const struct nc_entry *near_cache_lookup(struct near_cache *nc, int64_t uid, int64_t now_ms);

/* A read of uid is about to be sent: uid becomes FETCHING (a READY entry is dropped, an older
 * fetch forgotten). Returns the fetch's token, never 0. */
uint64_t near_cache_begin_fetch(struct near_cache *nc, int64_t uid);

/* Cache what the fetch found, if uid is still FETCHING under this token. 1: cached (v->sessions
 * now belongs to the cache); 0: cancelled meanwhile, nothing cached; -1: out of memory, nothing
 * cached. On 0 and -1 the caller keeps v->sessions. */
int near_cache_complete_fetch(struct near_cache *nc, int64_t uid, uint64_t token, const struct nc_value *v);

/* The fetch failed: forget uid if it is still FETCHING under this token. */
void near_cache_cancel(struct near_cache *nc, int64_t uid, uint64_t token);

/* uid changed: drop its entry, READY or FETCHING (which cancels that fetch). true if there was one. */
bool near_cache_invalidate(struct near_cache *nc, int64_t uid);

/* Drop every entry and cancel every fetch in flight (the generation moves on). */
void near_cache_clear(struct near_cache *nc);

/* Entries in the table, READY or FETCHING. */
uint32_t near_cache_entries(const struct near_cache *nc);

/* An entry's route: its bytes and length, or NULL if the user is offline. */
const char *near_cache_route(const struct nc_entry *e, size_t *len);

/* A copy of sessions (an entry's, for one answer; or a fetched list, for the entry), the
 * caller's to free. 0 and *out (NULL if there are none), or -1 out of memory. */
int near_cache_copy_sessions(const struct pr_sessions *from, struct pr_sessions **out);

/* The user an invalidated key names: "user:route:<uid>", "user:sessions:<uid>" and their cluster
 * forms with "{<uid>}". true and *uid, or false for any other key (not ours: ignored). */
bool near_cache_key_uid(const char *key, size_t len, int64_t *uid);

#endif
