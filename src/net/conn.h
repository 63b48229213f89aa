/* A client connection. Acceptor thread only (debug builds assert it: core/thread_role.h).
 *
 * States (enum conn_state), each changed only by conn_set_state in conn.c. */
#ifndef PR_NET_CONN_H
#define PR_NET_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "net/window.h"

struct acceptor;
struct pr_request;

/* Allowed changes: reading <-> paused; reading/paused -> draining; reading/paused/draining ->
 * broken; any but closed -> closed. rio is active exactly in CONN_READING. */
enum conn_state {
    CONN_READING,  /* rio active: bytes are read, framed and dispatched */
    CONN_PAUSED,   /* rio stopped because the reorder window is full; reads again once it drains */
    CONN_DRAINING, /* server shutdown or client half-close: no more reads; frames already received
                    * are served as the window allows; closes once every answer is written */
    CONN_BROKEN,   /* out of memory mid-request: answers can no longer be whole and in order;
                    * closed at this loop turn's flush (conn_break) */
    CONN_CLOSED,   /* fd closed (conn_close); the struct lives on only while on the acceptor's
                    * dirty list, which frees it. Answers still in the shards find no
                    * connection by id and are dropped. */
};

struct conn {
    struct acceptor *acc;  /* owner */
    uint64_t id;           /* slot | generation << 32: what the shards know it by */
    int fd;
    ev_io rio;             /* readable */
    ev_io wio;             /* writable, only while output is pending */
    enum conn_state state; /* see the enum; changed only by conn_set_state */
    bool dirty;            /* on the acceptor's list to flush/resume this loop turn (not a state) */
    struct conn *next_dirty;
    ev_tstamp last_active; /* when the client last sent bytes (idle_timeout) */

    uint8_t *in;           /* received bytes not yet framed */
    size_t in_len, in_cap;
    size_t in_need;        /* bytes the next frame needs, if known (skip re-parsing) */

    uint8_t *out;          /* encoded responses not yet written */
    size_t out_off, out_len, out_cap; /* out[out_off..out_len) is pending */

    struct window window;  /* requests read and not yet answered, in order */
};

/* Take ownership of an accepted, non-blocking fd. NULL on allocation failure (fd closed). */
struct conn *conn_create(struct acceptor *acc, int fd, uint64_t id);
/* Close and free; answers still in flight for it are dropped when they return. */
void conn_close(struct conn *c, const char *why);

/* An answer for this connection (from a shard or made by the acceptor): park it, move every
 * in-order answer to the output buffer. */
void conn_answer(struct conn *c, struct pr_request *req);

/* Once per loop turn, for connections marked dirty: write output, resume paused reading. */
void conn_flush(struct conn *c);

/* Out of memory: stop everything, close at this loop turn's flush (safe inside callbacks). */
void conn_break(struct conn *c);

/* Shutdown: stop reading; the connection closes itself when nothing is owed. */
void conn_drain(struct conn *c);

/* Answers still owed to this client (outstanding requests or unwritten bytes). */
bool conn_idle(const struct conn *c);

#endif
