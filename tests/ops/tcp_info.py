#!/usr/bin/python3
"""The TCP_INFO of this namespace's established sockets on local PORT,
read through sock_diag (as `ss -ti` does), one line each:

  ts=1 sack=1 wscale=1 snd_wscale=10 rcv_wscale=7 snd_mss=1448

  tcp_info.py PORT

Needed because some `ss` builds leave out the "ts" and "sack" words.
"""
import socket
import struct
import sys

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_DONE = 3
INET_DIAG_INFO = 2
TCP_ESTABLISHED = 1

port = int(sys.argv[1])


def dump(family):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
    # inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed
    # inet_diag_sockid (48 bytes): every socket, filtered below.
    req = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0,
                      1 << TCP_ESTABLISHED) + bytes(48)
    hdr = struct.pack("=IHHII", 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
    s.send(hdr + req)
    while True:
        data = s.recv(65536)
        off = 0
        while off < len(data):
            length, kind = struct.unpack_from("=IH", data, off)
            if kind == NLMSG_DONE:
                return
            msg = data[off + 16:off + length]
            sport = struct.unpack_from(">H", msg, 4)[0]
            if sport == port:
                attrs = msg[72:]
                a = 0
                while a + 4 <= len(attrs):
                    alen, atype = struct.unpack_from("=HH", attrs, a)
                    if atype == INET_DIAG_INFO:
                        info = attrs[a + 4:a + alen]
                        opts, ws = info[5], info[6]
                        snd_mss = struct.unpack_from("=I", info, 16)[0]
                        print(f"ts={opts & 1} sack={(opts >> 1) & 1} wscale={(opts >> 2) & 1} "
                              f"snd_wscale={ws & 15} rcv_wscale={ws >> 4} snd_mss={snd_mss}")
                    a += (alen + 3) & ~3
            off += (length + 3) & ~3


for fam in (socket.AF_INET, socket.AF_INET6):
    dump(fam)
