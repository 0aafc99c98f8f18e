#!/usr/bin/python3
"""The client's side of a handshake whose ACK carries the request.

  ack_with_data.py SERVER PORT [SPORT [FAULT]]

Sends a SYN (Linux options), takes synwall's SYN-ACK, then sends ONE
segment that both completes the handshake and carries an HTTP request, and
prints what the server answers; exits 0 if it was the page. With FAULT, a
copy of that segment with one fault goes first, and the script prints
`faulty: answered` or `faulty: silent` (no answer within 1.5 s) before it
sends the sound one. FAULT is one of tcp-checksum, ip-checksum, ip-length
(the IPv4 total length longer than the frame), options (behind the
timestamps, an option whose length runs past the header). The caller drops this namespace's kernel RSTs, since
the kernel knows nothing of this connection.
"""
import sys

from scapy.all import IP, TCP, Raw, conf, send, sniff, sr1
from scapy.layers.inet import in4_chksum
from scapy.utils import checksum

conf.verb = 0
server, port = sys.argv[1], int(sys.argv[2])
sport = int(sys.argv[3]) if len(sys.argv) > 3 else 47000
fault = sys.argv[4] if len(sys.argv) > 4 else None
ip = IP(dst=server)
# The interface towards the server (this namespace has no default route,
# so sniff's default interface would be the wrong one).
iface = conf.route.route(server)[0]
syn = TCP(sport=sport, dport=port, flags="S", seq=1000,
          options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (777, 0)), ("NOP", None), ("WScale", 7)])
synack = sr1(ip / syn, timeout=3)
if synack is None or synack[TCP].flags != "SA":
    sys.exit("no SYN-ACK")
ts = dict(synack[TCP].options).get("Timestamp")
opts = [("NOP", None), ("NOP", None), ("Timestamp", (778, ts[0]))] if ts else []
req = b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n"


def ack(options):
    return TCP(sport=sport, dport=port, flags="PA", seq=1001, ack=synack[TCP].seq + 1, options=options)


def faulty():
    """The ACK with the fault, as raw bytes where scapy would fix it."""
    pkt = IP(bytes(ip / ack(opts) / Raw(req)))
    if fault == "options":
        # Behind the timestamps, an option whose length runs past the header.
        raw = bytearray(bytes(pkt))
        doff = raw[32] >> 4
        raw[20 + 4 * doff:20 + 4 * doff] = b"\x47\x45\x00\x00"
        raw[32] = (doff + 1) << 4
        raw[2:4] = len(raw).to_bytes(2, "big")
        raw[10:12] = b"\0\0"
        raw[10:12] = checksum(bytes(raw[:20])).to_bytes(2, "big")
        raw[36:38] = b"\0\0"
        raw[36:38] = in4_chksum(6, IP(bytes(raw[:20])), bytes(raw[20:])).to_bytes(2, "big")
        return IP(bytes(raw))
    if fault == "tcp-checksum":
        pkt[TCP].chksum ^= 0x5555
    elif fault == "ip-checksum":
        pkt[IP].chksum ^= 0x5555
    elif fault == "ip-length":
        raw = bytearray(bytes(pkt))
        raw[2:4] = (len(raw) + 8).to_bytes(2, "big")
        raw[10:12] = b"\0\0"
        raw[10:12] = checksum(bytes(raw[:20])).to_bytes(2, "big")
        return IP(bytes(raw))
    else:
        sys.exit(f"unknown fault {fault}")
    return pkt


if fault:
    heard = sniff(iface=iface, filter=f"tcp and src port {port} and dst port {sport}", timeout=1.5,
                  started_callback=lambda: send(faulty()),
                  lfilter=lambda p: len(p[TCP].payload) > 0)
    print("faulty: answered" if heard else "faulty: silent", flush=True)
# Every segment the server sends in answer (its ACK, the response in one
# segment or several, FIN), in sequence order, retransmissions once.
heard = sniff(iface=iface, filter=f"tcp and src port {port} and dst port {sport}", timeout=3,
              started_callback=lambda: send(ip / ack(opts) / Raw(req)))
segments = {p[TCP].seq: bytes(p[TCP].payload) for p in heard if len(p[TCP].payload) > 0}
body = b"".join(segments[seq] for seq in sorted(segments))
print(body.decode(errors="replace"))
sys.exit(0 if b"200" in body and b"hello from behind synwall" in body else 1)
