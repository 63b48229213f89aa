#include "core/frame.h"

#include <string.h>

int frame_parse_request(const uint8_t *buf, size_t len, size_t max_frame, struct frame_request *out)
{
    out->header = NULL;
    out->frame_len = 0;
    if (len < FRAME_PREFIX)
        return FRAME_AGAIN;

    size_t hlen = frame_get_u32le(buf);
    /* Refuse a huge header before waiting for it: max_frame bounds H + args_size. */
    if (hlen > max_frame)
        return FRAME_ERR_TOO_BIG;
    if (len < FRAME_PREFIX + hlen) {
        out->frame_len = 0; /* args_size unknown until the header is here */
        return FRAME_AGAIN;
    }

    pb_arena_init(&out->arena, out->arena_buf, sizeof(out->arena_buf));
    Mpim__RpcHeader *h = mpim__rpc_header__unpack(&out->arena.allocator, hlen, buf + FRAME_PREFIX);
    if (h == NULL)
        return FRAME_ERR_HEADER;

    size_t total = hlen + (size_t)h->args_size;
    if (total > max_frame) {
        mpim__rpc_header__free_unpacked(h, &out->arena.allocator);
        return FRAME_ERR_TOO_BIG;
    }
    if (len < FRAME_PREFIX + total) {
        mpim__rpc_header__free_unpacked(h, &out->arena.allocator);
        out->frame_len = FRAME_PREFIX + total;
        return FRAME_AGAIN;
    }
    out->header = h;
    out->args = buf + FRAME_PREFIX + hlen;
    out->args_len = h->args_size;
    out->frame_len = FRAME_PREFIX + total;
    return FRAME_OK;
}

void frame_request_done(struct frame_request *fr)
{
    if (fr->header != NULL) {
        mpim__rpc_header__free_unpacked(fr->header, &fr->arena.allocator);
        fr->header = NULL;
    }
}

int frame_parse_response(const uint8_t *buf, size_t len, size_t max_frame, const uint8_t **body,
                         size_t *body_len, size_t *frame_len)
{
    if (len < FRAME_PREFIX)
        return FRAME_AGAIN;
    size_t blen = frame_get_u32le(buf);
    if (blen > max_frame)
        return FRAME_ERR_TOO_BIG;
    if (len < FRAME_PREFIX + blen)
        return FRAME_AGAIN;
    *body = buf + FRAME_PREFIX;
    *body_len = blen;
    *frame_len = FRAME_PREFIX + blen;
    return FRAME_OK;
}

static Mpim__RpcHeader header_for(const char *service, const char *method, size_t args_len)
{
    Mpim__RpcHeader h = MPIM__RPC_HEADER__INIT;
    h.service_name.data = (uint8_t *)service;
    h.service_name.len = strlen(service);
    h.method_name.data = (uint8_t *)method;
    h.method_name.len = strlen(method);
    h.args_size = (uint32_t)args_len;
    return h;
}

size_t frame_request_size(const char *service, const char *method, size_t args_len)
{
    Mpim__RpcHeader h = header_for(service, method, args_len);
    return FRAME_PREFIX + mpim__rpc_header__get_packed_size(&h) + args_len;
}

size_t frame_write_request(uint8_t *out, const char *service, const char *method, const uint8_t *args,
                           size_t args_len)
{
    Mpim__RpcHeader h = header_for(service, method, args_len);
    size_t hlen = mpim__rpc_header__pack(&h, out + FRAME_PREFIX);
    frame_put_u32le(out, (uint32_t)hlen);
    if (args_len > 0)
        memcpy(out + FRAME_PREFIX + hlen, args, args_len);
    return FRAME_PREFIX + hlen + args_len;
}
