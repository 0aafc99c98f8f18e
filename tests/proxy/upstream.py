"""Upstreams for the proxy-mode tests (run inside the server namespace).

  upstream.py http HOST PORT DIR    http.server for DIR, backlog 1024, quiet
  upstream.py report HOST PORT      per connection: parse a PROXY v2 header,
                                    read to end of stream, answer
                                    "src=IP:PORT n=BYTES" and close
  upstream.py stream HOST PORT      per connection: read a line "N", send N
                                    chunks of 1000 bytes, 20 a second, and
                                    close (a response without a length)
  upstream.py busy HOST PORT        one connection at a time, backlog 1:
                                    0.1 s, then read to end
                                    of stream and answer "n=BYTES" (a busy
                                    server whose accept queue overflows)

The PROXY v2 parser is written from haproxy's proxy-protocol.txt, separately
from synwall's encoder.
"""
import functools
import http.server
import ipaddress
import socket
import socketserver
import struct
import sys
import time

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError("short PROXY header")
        buf += chunk
    return buf


def proxy_header(conn):
    head = read_exact(conn, 16)
    if head[:12] != SIG or head[12] != 0x21:
        return "no-proxy-header"
    fam, length = head[13], struct.unpack("!H", head[14:16])[0]
    body = read_exact(conn, length)
    if fam == 0x11:
        ip, port = ipaddress.IPv4Address(body[0:4]), struct.unpack("!H", body[8:10])[0]
    elif fam == 0x21:
        ip, port = ipaddress.IPv6Address(body[0:16]), struct.unpack("!H", body[32:34])[0]
    else:
        return f"family-{fam:#x}"
    return f"{ip}:{port}"


def count_then_answer(conn, prefix):
    """Reads to end of stream, then answers PREFIX + "n=BYTES"."""
    n = 0
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        n += len(chunk)
    try:
        conn.sendall(f"{prefix}n={n}\n".encode())
    except OSError:
        pass


class Report(socketserver.BaseRequestHandler):
    def handle(self):
        try:
            src = proxy_header(self.request)
        except EOFError:
            return
        count_then_answer(self.request, f"src={src} ")


class Stream(socketserver.StreamRequestHandler):
    def handle(self):
        try:
            for _ in range(int(self.rfile.readline())):
                self.request.sendall(b"x" * 1000)
                time.sleep(0.05)
        except (OSError, ValueError):
            pass


class Busy(socketserver.BaseRequestHandler):
    def handle(self):
        time.sleep(0.1)
        count_then_answer(self.request, "")


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "http":
        server = http.server.ThreadingHTTPServer
        server.request_queue_size = 1024
        handler = functools.partial(Quiet, directory=sys.argv[4])
    elif mode == "busy":
        server = socketserver.TCPServer
        server.request_queue_size = 1
        handler = Busy
    else:
        server = socketserver.ThreadingTCPServer
        server.request_queue_size = 1024
        handler = Stream if mode == "stream" else Report
    server.allow_reuse_address = True
    server.daemon_threads = True
    server((host, port), handler).serve_forever()


main()
