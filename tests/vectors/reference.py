#!/usr/bin/env python3
"""Independent implementation of docs/cookie.md, written from the spec text.

Checks every vector in cookie.json (keys, cookies, checks) and exits non-zero
on the first mismatch. Standard library only.
"""
import ipaddress
import json
import struct
import sys

MASK = 2**64 - 1


def rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & MASK


def siphash(key, msg, out128=False):
    k0, k1 = struct.unpack("<QQ", key)
    v0, v1, v2, v3 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D, k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573
    if out128:
        v1 ^= 0xEE

    def rnd():
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & MASK; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
        v2 = (v2 + v3) & MASK; v3 = rotl(v3, 16); v3 ^= v2
        v0 = (v0 + v3) & MASK; v3 = rotl(v3, 21); v3 ^= v0
        v2 = (v2 + v1) & MASK; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)

    b = (len(msg) & 0xFF) << 56
    tail = len(msg) - len(msg) % 8
    for i in range(0, tail, 8):
        m = struct.unpack("<Q", msg[i:i + 8])[0]
        v3 ^= m; rnd(); rnd(); v0 ^= m
    for i, byte in enumerate(msg[tail:]):
        b |= byte << (8 * i)
    v3 ^= b; rnd(); rnd(); v0 ^= b
    v2 ^= 0xEE if out128 else 0xFF
    for _ in range(4):
        rnd()
    h1 = v0 ^ v1 ^ v2 ^ v3
    if not out128:
        return h1
    v1 ^= 0xDD
    for _ in range(4):
        rnd()
    h2 = v0 ^ v1 ^ v2 ^ v3
    return struct.pack("<QQ", h1, h2)


LABEL = b"synwall-key-v1\0\0"


def epoch_key(secret, epoch):
    return siphash(secret, LABEL + struct.pack(">Q", epoch), out128=True)


def attr_bits(epoch, a):
    ws = 15 if a["wscale"] is None else min(a["wscale"], 14)
    return (epoch & 1) << 9 | (a["mss_index"] & 7) << 6 | ws << 2 | int(a["sack"]) << 1 | int(a["ecn"])


def message(v, client_isn, attrs, ts):
    src = ipaddress.ip_address(v["src"]).packed
    dst = ipaddress.ip_address(v["dst"]).packed
    info = 1 << 24 | int(ts) << 10 | attrs
    return src + dst + struct.pack(">HHII", v["sport"], v["dport"], client_isn, info)


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else __file__.replace("reference.py", "cookie.json")
    d = json.load(open(path))
    # SipHash paper, appendix A.
    assert siphash(bytes(range(16)), bytes(range(15))) == 0xA129CA6149BE45E5
    secret = bytes.fromhex(d["secret"])
    rot = d["rotation_secs"]
    for k in d["keys"]:
        k0, k1 = struct.unpack("<QQ", epoch_key(secret, k["epoch"]))
        assert (f"{k0:016x}", f"{k1:016x}") == (k["k0"], k["k1"]), k
    for c in d["cookies"]:
        e = c["now"] // rot
        a = c["attrs"]
        bits = attr_bits(e, a)
        h = siphash(epoch_key(secret, e), message(c, c["client_isn"], bits, a["timestamps"]))
        isn = (h & 0x3FFFFF) << 10 | bits
        tsval = (h >> 32) if a["timestamps"] else None
        assert (isn, tsval) == (c["isn"], c["tsval"]), c["name"]
    skew = d["skew_secs"]
    other = bytes.fromhex(d["rollover_secret"])
    validators = {"one": [secret], "rollover": [other, secret], "other": [other]}
    for ch in d["checks"]:
        e = ch["now"] // rot
        # §2: the epoch now, and the previous one, or the next one in the
        # epoch's last skew_secs seconds.
        neighbour = e + 1 if ch["now"] % rot >= rot - skew else e - 1
        bits = ch["cookie_isn"] & 0x3FF
        key_epoch = e if (bits >> 9) == (e & 1) else neighbour
        ts = ch["tsecr"] is not None
        ok = False
        for s in validators[ch["validator"]]:
            h = siphash(epoch_key(s, key_epoch), message(ch, ch["client_isn"], bits, ts))
            ok = ok or ((ch["cookie_isn"] >> 10) == (h & 0x3FFFFF) and (not ts or ch["tsecr"] == h >> 32))
        assert ok == ch["valid"], ch["name"]
        if ok:
            ws = (bits >> 2) & 0xF
            want = {"mss_index": (bits >> 6) & 7, "wscale": None if ws == 15 else ws,
                    "sack": bool(bits & 2), "ecn": bool(bits & 1), "timestamps": ts}
            assert want == ch["attrs"], ch["name"]
    print(f"reference: {len(d['keys'])} keys, {len(d['cookies'])} cookies, {len(d['checks'])} checks agree")


if __name__ == "__main__":
    main()
