#!/usr/bin/python3
"""A fleet node's server: answers each connection's first read with
`pong NAME` and closes it.

  pong.py ADDRESS PORT NAME SECONDS
"""
import socket
import sys
import threading
import time

addr, port, name, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])


def serve(c):
    with c:
        c.settimeout(5)
        try:
            c.recv(64)
            c.sendall(f"pong {name}\n".encode())
        except OSError:
            pass


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(1024)
s.settimeout(0.5)
end = time.monotonic() + secs
while time.monotonic() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
