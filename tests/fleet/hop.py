#!/usr/bin/python3
"""Handshakes whose SYN and ACK the test sends at moments it chooses, so
that a route change can fall between them. Reads commands on standard
input, one per line, and answers each with one line:

  syn SPORT   sends a SYN from SPORT; answers `synack` (or `none`)
  ack SPORT   sends that handshake's ACK carrying `ping`; answers what
              the server sent back (`pong NAME` from a fleet node), or
              `none`

  hop.py SERVER PORT

The caller drops this namespace's kernel RSTs, since the kernel knows
nothing of these connections.
"""
import sys

from scapy.all import IP, TCP, Raw, conf, sr, sr1

conf.verb = 0
server, port = sys.argv[1], int(sys.argv[2])
ip = IP(dst=server)
synacks = {}

for line in sys.stdin:
    cmd, sport = line.split()
    sport = int(sport)
    if cmd == "syn":
        syn = TCP(sport=sport, dport=port, flags="S", seq=5000,
                  options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (901, 0)),
                           ("NOP", None), ("WScale", 7)])
        synack = sr1(ip / syn, timeout=2, retry=2)
        ok = synack is not None and synack[TCP].flags == "SA"
        if ok:
            synacks[sport] = synack
        print("synack" if ok else "none", flush=True)
    elif cmd == "ack":
        synack = synacks.pop(sport)
        ts = dict(synack[TCP].options).get("Timestamp")
        opts = [("NOP", None), ("NOP", None), ("Timestamp", (902, ts[0]))] if ts else []
        ack = TCP(sport=sport, dport=port, flags="PA", seq=5001, ack=synack[TCP].seq + 1,
                  options=opts)
        answered, _ = sr(ip / ack / Raw(b"ping\n"), multi=True, timeout=1)
        # The first segment with data: the server retransmits it, since
        # nothing here acknowledges it.
        bodies = [bytes(r[TCP].payload) for _, r in answered if bytes(r[TCP].payload)]
        body = bodies[0].decode(errors="replace").split("\n")[0].strip() if bodies else ""
        print(body or "none", flush=True)
