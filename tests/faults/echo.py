#!/usr/bin/python3
"""An echo server and a long-lived client for the fault-injection tests.

  echo.py server HOST PORT SECS    accept and echo every connection, SECS long
  echo.py client HOST PORT SECS    one connection: every 50 ms send a line
                                   and wait for its echo, SECS long; prints
                                   "echoes=N errors=M" and exits 0 if M = 0
"""
import socket
import sys
import threading
import time

mode, host, port, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])


def serve():
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(1024)

    def echo(c):
        with c:
            while data := c.recv(4096):
                c.sendall(data)

    while True:
        c, _ = s.accept()
        threading.Thread(target=echo, args=(c,), daemon=True).start()


def client():
    s = socket.create_connection((host, port), timeout=5)
    echoes = errors = 0
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            s.sendall(b"ping\n")
            got = b""
            while len(got) < 5:
                chunk = s.recv(5 - len(got))
                if not chunk:
                    raise ConnectionError("closed")
                got += chunk
            echoes += 1
        except OSError as e:
            errors += 1
            print(e, file=sys.stderr)
            break
        time.sleep(0.05)
    print(f"echoes={echoes} errors={errors}", flush=True)
    sys.exit(0 if errors == 0 else 1)


if mode == "server":
    threading.Thread(target=serve, daemon=True).start()
    time.sleep(secs)
else:
    client()
