#!/usr/bin/env python3
"""Write the seed corpora for fuzz_frame and fuzz_codec (tests/fuzz/corpus/{frame,codec}/).

The seeds are tiny and committed; rerun this after changing the wire format:
    python3 tests/fuzz/gen_corpus.py
Protobuf is encoded by hand here so that no protobuf package is needed.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def varint(n):
    n &= (1 << 64) - 1  # int64 negatives are ten-byte two's complement varints
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, value):
    return varint(num << 3) + varint(value) if value else b""


def field_bytes(num, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data if data else b""


METHODS = ["BindRoute", "QueryRoute", "Deliver", "UnbindRoute", "Heartbeat", "Stats"]


def args_for(method, uid, gw=b"10.0.0.1:9000", msg=b"hello", mtype=b"text"):
    if method == "BindRoute":
        return (field_varint(1, uid) + field_bytes(2, gw) + field_bytes(3, "10.9.8.7")
                + field_varint(4, 40000))
    if method == "QueryRoute":
        return field_varint(1, uid)
    if method == "Deliver":
        return field_varint(1, uid) + field_bytes(2, msg) + field_bytes(3, mtype)
    if method == "Stats":
        return b""  # StatsReq has no fields
    return field_varint(1, uid) + field_bytes(2, gw)  # UnbindRoute, Heartbeat


def gateway_args(gw=b"gw-1:7000", lease_ms=0):
    """GatewayHeartbeatReq (with lease_ms) or DrainGatewayReq: a gateway, no user (contract §8)."""
    return field_bytes(1, gw) + field_varint(2, lease_ms)


def header(service, method, args_size):
    return field_bytes(1, service) + field_bytes(2, method) + field_varint(3, args_size)


def frame(method, args, service="PresenceService", args_size=None):
    h = header(service, method, len(args) if args_size is None else args_size)
    return struct.pack("<I", len(h)) + h + args


def write(kind, name, data):
    d = os.path.join(HERE, "corpus", kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    # fuzz_frame: [max_frame knob, chunk seed, max_message/answer knob] + stream
    ctl = bytes([0xFF, 0x11, 0x3F])
    for i, m in enumerate(METHODS):
        write("frame", "ok-" + m, ctl + frame(m, args_for(m, 1000 + i)))
    write("frame", "mpim-service", ctl + frame("QueryRoute", args_for("QueryRoute", 7),
                                               service="mpim.PresenceService"))
    write("frame", "pipeline", bytes([0xFF, 0x05, 0x7F]) + b"".join(
        frame(m, args_for(m, 42)) for m in METHODS + ["BindRoute", "QueryRoute"]))
    write("frame", "empty-header", ctl + struct.pack("<I", 0) + frame("QueryRoute",
                                                                      args_for("QueryRoute", 1)))
    write("frame", "unknown-method", ctl + frame("Nope", b"") + frame("BindRoute", b"",
                                                                       service="Other"))
    write("frame", "bad-args", ctl + frame("Deliver", b"\xff\xff\xff"))
    write("frame", "invalid-fields", ctl + frame("BindRoute", args_for("BindRoute", 0))
          + frame("Heartbeat", args_for("Heartbeat", 5, gw=b"bad gw"))
          + frame("Deliver", args_for("Deliver", 5, msg=b"x" * 600)))
    write("frame", "too-big", bytes([0x00, 0x01, 0x3F]) + frame("Deliver", b"", args_size=100000))
    write("frame", "huge-prefix", ctl + struct.pack("<I", 0x7FFFFFFF))
    write("frame", "garbage-header", ctl + struct.pack("<I", 3) + b"\xff\xff\xff")
    write("frame", "partial", ctl + frame("UnbindRoute", args_for("UnbindRoute", 9))[:-3])

    # fuzz_codec: [answer knobs, max_message knob] + args
    for i, m in enumerate(METHODS[:5]):
        write("codec", "ok-" + m, bytes([0x08 | i, 0xFF]) + args_for(m, 1 << (8 * i)))
    write("codec", "int64-max", bytes([0x18, 0xFF]) + args_for("BindRoute", (1 << 63) - 1))
    write("codec", "negative-user", bytes([0x01, 0xFF]) + args_for("Heartbeat", -5))
    write("codec", "gateway-255", bytes([0x00, 0xFF]) + args_for("UnbindRoute", 3, gw=b"g" * 255))
    write("codec", "gateway-nul", bytes([0x00, 0xFF]) + args_for("UnbindRoute", 3, gw=b"g\x00w"))
    write("codec", "message-binary", bytes([0x28, 0x10]) + args_for("Deliver", 3,
                                                                       msg=bytes(range(64))))
    write("codec", "unknown-field", bytes([0x00, 0x01]) + args_for("QueryRoute", 3) + b"\x7a\x02zz")

    # Gateway leases and drains (contract §8)
    write("frame", "ok-GatewayHeartbeat", ctl + frame("GatewayHeartbeat", gateway_args(lease_ms=5000)))
    write("frame", "ok-DrainGateway", ctl + frame("DrainGateway", gateway_args()))
    write("codec", "ok-GatewayHeartbeat", bytes([0x08, 0xFF]) + gateway_args(lease_ms=1000))
    write("codec", "ok-DrainGateway", bytes([0x08, 0xFF]) + gateway_args())
    write("codec", "lease-too-short", bytes([0x00, 0xFF]) + gateway_args(lease_ms=999))


if __name__ == "__main__":
    main()
