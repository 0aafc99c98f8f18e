#!/usr/bin/python3
"""A handshake's ACK arriving again after its connection ended.

  late_ack.py SERVER PORT SPORT DELAY

Completes a handshake by hand (SYN, SYN-ACK, ACK), resets the connection,
waits DELAY seconds and sends the same ACK again, as a copy that reached
the server late would (a stalled worker, a retransmission). Exits 0 once
all is sent. The caller drops this namespace's kernel RSTs, since the
kernel knows nothing of this connection.
"""
import sys
import time

from scapy.all import IP, TCP, conf, send, sr1

conf.verb = 0
server, port, sport, delay = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ip = IP(dst=server)
syn = TCP(sport=sport, dport=port, flags="S", seq=7000,
          options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (901, 0)), ("NOP", None),
                   ("WScale", 7)])
synack = sr1(ip / syn, timeout=2, retry=2)
if synack is None or synack[TCP].flags != "SA":
    sys.exit("no SYN-ACK")
ts = dict(synack[TCP].options).get("Timestamp")
opts = [("NOP", None), ("NOP", None), ("Timestamp", (902, ts[0]))] if ts else []
ack = ip / TCP(sport=sport, dport=port, flags="A", seq=7001, ack=synack[TCP].seq + 1, options=opts)
send(ack)
time.sleep(0.5)
send(ip / TCP(sport=sport, dport=port, flags="R", seq=7001))
time.sleep(delay)
send(ack)
