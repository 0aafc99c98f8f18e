"""Clients for the proxy-mode tests (run inside the client namespace).

  client.py halfclose HOST PORT N   send N bytes, shut down the write side,
                                    print the reply and our own address
  client.py idle HOST PORT          connect, send nothing, print how long
                                    until the connection is closed
  client.py bound HOST PORT K [WAIT]
                                    hold K connections, open one more that
                                    asks (after WAIT s, 0.2 by default, of
                                    waiting for a reset); print what
                                    happens to it, to the K, and to it once
                                    one of the K ends
  client.py stream HOST PORT N      ask for N chunks, read to the end, print
                                    how it ended and the bytes received
  client.py connect HOST PORT       connect (2 s limit), print "connected",
                                    "refused" or "timeout"
"""
import errno
import socket
import sys
import time


def connect(host, port):
    return socket.create_connection((host, port), timeout=10)


def halfclose(host, port, n):
    s = connect(host, port)
    s.sendall(b"x" * n)
    s.shutdown(socket.SHUT_WR)
    reply = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        reply += chunk
    ip, port = s.getsockname()[:2]
    print(f"me={ip}:{port} reply={reply.decode().strip()}")


def idle(host, port):
    s = connect(host, port)
    t0 = time.monotonic()
    s.settimeout(15)
    try:
        data = s.recv(1)
        how = "eof" if not data else "data"
    except ConnectionResetError:
        how = "reset"
    except socket.timeout:
        how = "open"
    print(f"{how} after {time.monotonic() - t0:.2f}")


def bound(host, port, k, wait):
    # Quick: the proxy's idle timeout (2 s in the test) must not end the K
    # before the end.
    held = [connect(host, port) for _ in range(k)]
    time.sleep(0.2)
    # The extra one asks (3 bytes, then end of stream) and waits for the
    # answer: none while the K sessions are open, as in an accept queue.
    extra = None
    try:
        extra = connect(host, port)
        # A reset that is due comes before the request: a request sent
        # after the proxy closed the connection carries the handshake's
        # valid SYN cookie still, so it would make the connection again (as
        # a request behind the kernel's own SYN cookies does), a second
        # session that the counts would show.
        extra.settimeout(wait)
        try:
            data = extra.recv(65536)
        except socket.timeout:
            extra.sendall(b"xyz")
            extra.shutdown(socket.SHUT_WR)
            extra.settimeout(0.6)
            data = extra.recv(65536)
        print("extra:eof" if not data else "extra:data")
    except socket.timeout:
        print("extra:waiting")
    except OSError as e:
        # The reset may come before connect() returns, or before the send
        # or the shutdown (ENOTCONN then).
        if e.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
            raise
        print("extra:reset")
        extra = None
    for s in held:
        s.settimeout(0.1)
        try:
            s.recv(1)
            print("held:closed")
        except socket.timeout:
            print("held:open")
        except OSError:
            print("held:closed")
    if extra is None:
        return
    # One ends: the extra one's turn.
    held[0].close()
    extra.settimeout(5)
    reply = b""
    try:
        while True:
            chunk = extra.recv(65536)
            if not chunk:
                break
            reply += chunk
        print(f"extra:{reply.decode().strip()}")
    except OSError as e:
        print(f"extra:{type(e).__name__}")


def stream(host, port, chunks):
    s = connect(host, port)
    s.sendall(f"{chunks}\n".encode())
    n = 0
    try:
        while True:
            data = s.recv(65536)
            if not data:
                print(f"eof n={n}")
                return
            n += len(data)
    except ConnectionResetError:
        print(f"reset n={n}")
    except socket.timeout:
        print(f"timeout n={n}")


def main():
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if cmd == "halfclose":
        halfclose(host, port, int(sys.argv[4]))
    elif cmd == "idle":
        idle(host, port)
    elif cmd == "stream":
        stream(host, port, int(sys.argv[4]))
    elif cmd == "connect":
        try:
            socket.create_connection((host, port), timeout=2)
            print("connected")
        except ConnectionRefusedError:
            print("refused")
        except socket.timeout:
            print("timeout")
    else:
        bound(host, port, int(sys.argv[4]), float(sys.argv[5]) if len(sys.argv) > 5 else 0.2)


main()
