#!/usr/bin/python3
"""Uploads whose first flight rides right behind the handshake ACK.

  first_flight.py server ADDR PORT
  first_flight.py client ADDR PORT SIZE LIMIT [GAP_MS]

The server answers each connection's upload (4-byte length, then the
bytes) with the SHA-256 of what it read, then waits for the client to
close first (so TIME-WAIT stays on the client, which never reuses such a
port). The client makes connections one after another, LIMIT of them, or
until UNIX time T when LIMIT is @T, each sending SIZE random bytes the
moment connect() returns (so the ACK and a full first window leave
together), pausing GAP_MS between connections, checks every digest and
prints "ok N".
"""
import hashlib
import os
import socket
import struct
import sys
import time


def read_exact(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"upload cut short at {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def server(addr, port):
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen(64)
    print("listening", flush=True)
    while True:
        conn, _ = s.accept()
        with conn:
            try:
                (n,) = struct.unpack("!I", read_exact(conn, 4))
                conn.sendall(hashlib.sha256(read_exact(conn, n)).hexdigest().encode())
                conn.recv(1)
            except (EOFError, OSError) as e:
                print("error:", e, flush=True)


def client(addr, port, size, limit, gap_ms):
    until = float(limit[1:]) if limit.startswith("@") else None
    count = 0
    while (time.time() < until) if until is not None else (count < int(limit)):
        data = os.urandom(size)
        with socket.create_connection((addr, port), timeout=10) as c:
            c.sendall(struct.pack("!I", size) + data)
            got = read_exact(c, 64).decode()
        if got != hashlib.sha256(data).hexdigest():
            sys.exit(f"connection {count}: digest mismatch")
        count += 1
        time.sleep(gap_ms / 1000)
    print("ok", count, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]))
    else:
        gap = float(sys.argv[6]) if len(sys.argv) > 6 else 0
        client(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], gap)
