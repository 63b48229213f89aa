/* MPIM mprpc framing (contract §1). Pure functions, any thread.
 *
 *   request:  u32le H | H bytes RpcHeader | args_size bytes of args
 *   response: u32le L | L bytes of the response message
 *
 * Parsers return FRAME_OK (a whole frame), FRAME_AGAIN (need more bytes) or a negative error,
 * and never copy the args: they point into the caller's buffer (picohttpparser's contract). */
#ifndef PR_CORE_FRAME_H
#define PR_CORE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "core/pb_arena.h"
#include "presence.pb-c.h"

enum frame_status {
    FRAME_OK = 1,
    FRAME_AGAIN = 0,
    FRAME_ERR_TOO_BIG = -1, /* H + args_size > max_frame_bytes: close the connection */
    FRAME_ERR_HEADER = -2,  /* RpcHeader does not parse: close the connection */
};

#define FRAME_PREFIX 4u

struct frame_request {
    Mpim__RpcHeader *header; /* FRAME_OK only; release with frame_request_done */
    const uint8_t *args;     /* FRAME_OK only; points into the caller's buffer */
    size_t args_len;
    size_t frame_len; /* FRAME_OK: bytes consumed; FRAME_AGAIN: total bytes needed, 0 if unknown */
    struct pb_arena arena;      /* the header decodes here, so a frame costs no malloc */
    uint8_t arena_buf[256];
};

/* Parse one request frame at the start of buf. */
int frame_parse_request(const uint8_t *buf, size_t len, size_t max_frame, struct frame_request *out);

/* Release what a FRAME_OK parse decoded (safe to call after any result). */
void frame_request_done(struct frame_request *fr);

/* Parse one response frame: *body, *body_len point at the message inside buf. */
int frame_parse_response(const uint8_t *buf, size_t len, size_t max_frame, const uint8_t **body,
                         size_t *body_len, size_t *frame_len);

/* Bytes frame_write_request needs. */
size_t frame_request_size(const char *service, const char *method, size_t args_len);

/* Write a whole request frame into out (frame_request_size bytes). Returns bytes written. */
size_t frame_write_request(uint8_t *out, const char *service, const char *method, const uint8_t *args,
                           size_t args_len);

static inline void frame_put_u32le(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t frame_get_u32le(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

#endif
