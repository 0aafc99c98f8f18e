#!/usr/bin/python3
"""A handshake held half-open across a moment the test chooses.

  split_handshake.py SERVER PORT SPORT

Sends a SYN with Linux's options and a TCP Fast Open cookie request, and
prints one line about the SYN-ACK: `synack tfo=1` if it carried a Fast Open
cookie (only the kernel gives one; synwall never does), else `synack tfo=0`.
Then waits for a line on standard input before it sends the ACK, which
carries `ping`, and prints what the server answers; exits 0 if the server
answered `pong`. The caller drops this namespace's kernel RSTs, since the
kernel knows nothing of this connection.
"""
import sys

from scapy.all import IP, TCP, Raw, conf, sr, sr1

conf.verb = 0
server, port, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ip = IP(dst=server)
syn = TCP(sport=sport, dport=port, flags="S", seq=5000,
          options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (901, 0)), ("NOP", None),
                   ("WScale", 7), ("TFO", b"")])
synack = sr1(ip / syn, timeout=2, retry=2)
if synack is None or synack[TCP].flags != "SA":
    sys.exit("no SYN-ACK")
options = dict(synack[TCP].options)
print(f"synack tfo={int('TFO' in options)}", flush=True)

sys.stdin.readline()
ts = options.get("Timestamp")
opts = [("NOP", None), ("NOP", None), ("Timestamp", (902, ts[0]))] if ts else []
ack = TCP(sport=sport, dport=port, flags="PA", seq=5001, ack=synack[TCP].seq + 1, options=opts)
answered, _ = sr(ip / ack / Raw(b"ping\n"), multi=True, timeout=3)
body = b"".join(bytes(r[TCP].payload) for _, r in answered)
print(body.decode(errors="replace"), flush=True)
sys.exit(0 if b"pong" in body else 1)
