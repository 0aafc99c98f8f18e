#!/usr/bin/python3
"""Independent check of synwall's handshake core with scapy.

  handshake.py syns OUT.pcap          SYNs as Linux, Windows and macOS send
                                      them, over IPv4, IPv6 (with an
                                      extension header), VLAN and QinQ, with
                                      ECN, plus frames synwall must not answer
  handshake.py acks SYNACKS.pcap OUT.pcap
                                      for every SYN-ACK, the client's ACK (an
                                      HTTP request on every other one), then
                                      forged ACKs with wrong cookies

Addresses are from the benchmarking ranges only (198.18.0.0/15, 2001:2::/48).
"""
import sys
import time

from scapy.all import (ARP, Dot1AD, Dot1Q, Ether, IP, IPv6, IPv6ExtHdrHopByHop,
                       TCP, UDP, rdpcap, wrpcap)

SERVER_MAC, CLIENT_MAC = "02:00:00:00:00:01", "02:00:00:00:00:02"
LINUX = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (0x12345678, 0)), ("NOP", None), ("WScale", 7)]
WINDOWS = [("MSS", 1460), ("NOP", None), ("WScale", 8), ("NOP", None), ("NOP", None), ("SAckOK", b"")]
MACOS = [("MSS", 1460), ("NOP", None), ("WScale", 6), ("NOP", None), ("NOP", None),
         ("Timestamp", (0x0a0b0c0d, 0)), ("SAckOK", b""), ("EOL", None)]


def eth():
    return Ether(src=CLIENT_MAC, dst=SERVER_MAC)


def syns():
    v4 = IP(src="198.18.0.2", dst="198.18.0.1", flags="DF")
    v6 = IPv6(src="2001:2::2", dst="2001:2::1")
    answered = [
        eth() / v4 / TCP(sport=40001, dport=80, flags="S", seq=1000, options=LINUX),
        eth() / v4 / TCP(sport=40002, dport=80, flags="S", seq=2000, options=WINDOWS),
        eth() / v4 / TCP(sport=40003, dport=80, flags="S", seq=3000, options=MACOS),
        eth() / v4 / TCP(sport=40004, dport=80, flags="SEC", seq=4000, options=LINUX),
        eth() / v4 / TCP(sport=40005, dport=80, flags="S", seq=5000),
        eth() / v6 / TCP(sport=40006, dport=80, flags="S", seq=6000, options=LINUX),
        eth() / v6 / IPv6ExtHdrHopByHop() / TCP(sport=40007, dport=80, flags="S", seq=7000, options=WINDOWS),
        eth() / Dot1Q(vlan=10) / v4 / TCP(sport=40008, dport=80, flags="S", seq=8000, options=LINUX),
        eth() / Dot1AD(vlan=100) / Dot1Q(vlan=200) / v4 / TCP(sport=40009, dport=80, flags="S", seq=9000, options=MACOS),
        eth() / IP(src="198.18.0.2", dst="198.18.0.1", options=b"\x01\x01\x01\x00") / TCP(sport=40010, dport=80, flags="S", seq=10000, options=LINUX),
    ]
    not_answered = [
        eth() / v4 / TCP(sport=40100, dport=443, flags="S", options=LINUX),     # not protected: pass
        eth() / v4 / UDP(sport=40101, dport=80),                                 # not TCP: pass
        Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="198.18.0.1"),  # pass
        eth() / v4 / TCP(sport=40102, dport=80, flags="SF", options=LINUX),     # drop syn_fin
        eth() / v4 / TCP(sport=40103, dport=80, flags="S", chksum=0x1234),      # drop tcp_checksum
    ]
    frames = answered + not_answered
    now = time.time()
    for f in frames:
        f.time = now
    return frames


def acks(synacks):
    out = []
    for i, sa in enumerate(synacks):
        ip = sa[IPv6] if IPv6 in sa else sa[IP]
        tcp = sa[TCP]
        opts = []
        for name, val in tcp.options:
            if name == "Timestamp":
                opts = [("NOP", None), ("NOP", None), ("Timestamp", (0x12349999, val[0]))]
        l2 = Ether(src=sa.dst, dst=sa.src)
        if Dot1AD in sa:
            l2 = l2 / Dot1AD(vlan=sa[Dot1AD].vlan) / Dot1Q(vlan=sa[Dot1Q].vlan)
        elif Dot1Q in sa:
            l2 = l2 / Dot1Q(vlan=sa[Dot1Q].vlan)
        l3 = (IPv6(src=ip.dst, dst=ip.src) if IPv6 in sa else IP(src=ip.dst, dst=ip.src, flags="DF"))
        seg = TCP(sport=tcp.dport, dport=tcp.sport, flags="A", seq=tcp.ack, ack=tcp.seq + 1, options=opts)
        pkt = l2 / l3 / seg
        if i % 2:
            pkt = l2 / l3 / TCP(sport=tcp.dport, dport=tcp.sport, flags="PA", seq=tcp.ack,
                                ack=tcp.seq + 1, options=opts) / b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        pkt.time = sa.time
        out.append(pkt)
    # Forged: the right 4-tuples with the cookie off by one, and random numbers.
    forged = []
    for pkt in out[:3]:
        f = pkt.copy()
        f[TCP].ack = (f[TCP].ack + 1) % 2**32
        del f[TCP].chksum
        forged.append(f)
    for n in range(5):
        f = eth() / IP(src="198.18.0.2", dst="198.18.0.1") / TCP(sport=41000 + n, dport=80, flags="A",
                                                                seq=0x01020304 * (n + 1) % 2**32,
                                                                ack=0x0a0b0c0d * (n + 3) % 2**32)
        f.time = out[0].time
        forged.append(f)
    return out + forged


def main():
    if sys.argv[1] == "syns":
        wrpcap(sys.argv[2], syns())
    elif sys.argv[1] == "acks":
        wrpcap(sys.argv[3], acks(rdpcap(sys.argv[2])))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    main()
