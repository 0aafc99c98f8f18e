#!/usr/bin/python3
"""A handshake from a client with a small MSS, over IPv4 or IPv6.

  small_mss.py SERVER PORT SPORT MSS

Sends a SYN with the MSS option MSS (and Linux's other options), takes the
SYN-ACK, sends the ACK with an HTTP request and prints what the server
answers and the largest segment it sent; exits 0 if it was the page. The
caller drops this namespace's kernel RSTs, since the kernel knows nothing
of this connection.
"""
import sys

from scapy.all import IP, IPv6, TCP, Raw, conf, sr, sr1

conf.verb = 0
server, port, sport, mss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ip = IPv6(dst=server) if ":" in server else IP(dst=server)
syn = TCP(sport=sport, dport=port, flags="S", seq=3000,
          options=[("MSS", mss), ("SAckOK", b""), ("Timestamp", (501, 0)), ("NOP", None),
                   ("WScale", 7)])
synack = sr1(ip / syn, timeout=3, retry=2)
if synack is None or synack[TCP].flags != "SA":
    sys.exit("no SYN-ACK")
ts = dict(synack[TCP].options).get("Timestamp")
opts = [("NOP", None), ("NOP", None), ("Timestamp", (502, ts[0]))] if ts else []
req = b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n"
ack = TCP(sport=sport, dport=port, flags="PA", seq=3001, ack=synack[TCP].seq + 1, options=opts)
answered, _ = sr(ip / ack / Raw(req), multi=True, timeout=3)
segments = [bytes(r[TCP].payload) for _, r in answered if r.haslayer(TCP)]
body = b"".join(segments)
print(f"largest={max((len(s) for s in segments), default=0)} "
      f"flags={','.join(str(r[TCP].flags) for _, r in answered if r.haslayer(TCP))}")
print(body.decode(errors="replace"), flush=True)
sys.exit(0 if b"200 OK" in body else 1)
