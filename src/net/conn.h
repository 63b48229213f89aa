/* A client connection. Acceptor thread only.
 *
 * States, all changed in conn.c:
 *   reading  - rio active: bytes are read, framed and dispatched;
 *   paused   - rio stopped because the reorder window is full; resumes when it drains;
 *   draining - server shutdown: no more reads; closes once every answer is written;
 *   broken   - out of memory mid-request: closed at the next flush (conn_break);
 *   closed   - fd closed and the struct freed (conn_close); answers still in the shards
 *              find no connection by id and are dropped. */
#ifndef PR_NET_CONN_H
#define PR_NET_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>

#include "net/window.h"

struct acceptor;
struct pr_request;

struct conn {
    struct acceptor *acc;  /* owner */
    uint64_t id;           /* slot | generation << 32: what the shards know it by */
    int fd;
    ev_io rio;             /* readable */
    ev_io wio;             /* writable, only while output is pending */
    bool paused;           /* window full: not reading */
    bool draining;         /* shutdown: no more reads */
    bool broken;           /* out of memory: answers can no longer be whole and in order; close */
    bool dirty;            /* on the acceptor's list to flush/resume this loop turn */
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
