#!/usr/bin/python3
"""The client's side of a handshake whose ACK carries the request.

  ack_with_data.py SERVER PORT

Sends a SYN (Linux options), takes synwall's SYN-ACK, then sends ONE
segment that both completes the handshake and carries an HTTP request, and
prints what the server answers. The caller drops this namespace's kernel
RSTs, since the kernel knows nothing of this connection.
"""
import sys

from scapy.all import IP, TCP, Raw, conf, sr, sr1

conf.verb = 0
server, port = sys.argv[1], int(sys.argv[2])
sport = 47000
ip = IP(dst=server)
syn = TCP(sport=sport, dport=port, flags="S", seq=1000,
          options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (777, 0)), ("NOP", None), ("WScale", 7)])
synack = sr1(ip / syn, timeout=3)
if synack is None or synack[TCP].flags != "SA":
    sys.exit("no SYN-ACK")
ts = dict(synack[TCP].options).get("Timestamp")
opts = [("NOP", None), ("NOP", None), ("Timestamp", (778, ts[0]))] if ts else []
req = b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n"
ack = TCP(sport=sport, dport=port, flags="PA", seq=1001, ack=synack[TCP].seq + 1, options=opts)
# Every segment the server sends in answer (its ACK, the response, FIN).
answered, _ = sr(ip / ack / Raw(req), multi=True, timeout=3)
replies = [bytes(r[TCP].payload) for _, r in answered]
body = b"".join(replies)
print(body.decode(errors="replace"))
sys.exit(0 if b"200" in body and b"hello from behind synwall" in body else 1)
