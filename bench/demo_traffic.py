#!/usr/bin/python3
"""Traffic for bench/demo.sh (offline): a spoofed SYN flood plus real clients.

  demo_traffic.py syns N OUT.pcap            N flood SYNs from random sources in
                                             198.18.0.0/15 (never outside it), and
                                             three real clients (Linux, Windows,
                                             macOS option layouts), interleaved
  demo_traffic.py acks SYNACKS.pcap OUT.pcap the real clients' ACKs (with their
                                             HTTP requests) and one forged ACK per
                                             flood SYN-ACK (a guessed cookie)
"""
import random
import sys
import time

from scapy.all import IP, TCP, Ether, Raw, rdpcap, wrpcap

SERVER = "198.18.0.1"
CLIENTS = {  # port -> (address, options)
    50001: ("198.18.0.2", [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (111, 0)), ("NOP", None), ("WScale", 7)]),
    50002: ("198.18.0.3", [("MSS", 1460), ("NOP", None), ("WScale", 8), ("NOP", None), ("NOP", None), ("SAckOK", b"")]),
    50003: ("198.18.0.4", [("MSS", 1460), ("NOP", None), ("WScale", 6), ("NOP", None), ("NOP", None),
                           ("Timestamp", (333, 0)), ("SAckOK", b""), ("EOL", None)]),
}
L2 = dict(src="02:00:00:00:00:02", dst="02:00:00:00:00:01")


def bench_source(rng):
    # 198.18.0.0/15: 198.18.x.y or 198.19.x.y, avoiding .0 and .255 hosts.
    return f"198.{rng.choice((18, 19))}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def syns(n, out):
    rng = random.Random(7)
    now = time.time()
    frames = [Ether(**L2) / IP(src=bench_source(rng), dst=SERVER) /
              TCP(sport=rng.randrange(1024, 65536), dport=80, flags="S", seq=rng.getrandbits(32),
                  options=[("MSS", 1460)]) for _ in range(n)]
    for i, (port, (addr, opts)) in enumerate(CLIENTS.items()):
        frames.insert((i + 1) * n // 4, Ether(**L2) / IP(src=addr, dst=SERVER) /
                      TCP(sport=port, dport=80, flags="S", seq=1000 * port, options=opts))
    for f in frames:
        f.time = now
    wrpcap(out, frames)


def acks(synacks, out):
    rng = random.Random(11)
    frames = []
    for sa in rdpcap(synacks):
        ip, tcp = sa[IP], sa[TCP]
        ts = [v for k, v in tcp.options if k == "Timestamp"]
        opts = [("NOP", None), ("NOP", None), ("Timestamp", (999, ts[0][0]))] if ts else []
        if CLIENTS.get(tcp.dport, (None,))[0] == ip.dst:
            f = (Ether(src=sa.dst, dst=sa.src) / IP(src=ip.dst, dst=ip.src) /
                 TCP(sport=tcp.dport, dport=80, flags="PA", seq=tcp.ack, ack=tcp.seq + 1, options=opts) /
                 Raw(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n"))
        else:  # an attacker guessing the cookie
            f = (Ether(src=sa.dst, dst=sa.src) / IP(src=ip.dst, dst=ip.src) /
                 TCP(sport=tcp.dport, dport=80, flags="A", seq=tcp.ack, ack=rng.getrandbits(32)))
        f.time = sa.time
        frames.append(f)
    wrpcap(out, frames)


if __name__ == "__main__":
    if sys.argv[1] == "syns":
        syns(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "acks":
        acks(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: demo_traffic.py syns N OUT | acks SYNACKS OUT")
