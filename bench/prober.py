"""Legitimate-client prober for the bench kit (run in the client namespace).

  python3 prober.py HOST PORT CONCURRENCY SECONDS

CONCURRENCY real kernel TCP clients, each making full HTTP/1.0 requests
back to back for SECONDS (a request started in the window may finish after
it). Prints one JSON line: attempts, successes (HTTP 200, complete
response), success rate, and connect and whole-request latency (p50/p99,
milliseconds, over successful requests). A request fails when it is not
done within 10 s (the SYN retransmits at 1 s and 3 s fit in that).
"""
import json
import socket
import sys
import threading
import time

host, port, conc, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
REQUEST = f"GET /index.html HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
TIMEOUT = 10.0
lock = threading.Lock()
results = []  # (ok, connect_ms, total_ms)


def one():
    t0 = time.monotonic()
    try:
        s = socket.create_connection((host, port), timeout=TIMEOUT)
    except OSError:
        return False, None, None
    t1 = time.monotonic()
    try:
        s.settimeout(max(0.1, TIMEOUT - (t1 - t0)))
        s.sendall(REQUEST)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        ok = data.startswith(b"HTTP/1.0 200") or data.startswith(b"HTTP/1.1 200")
    except OSError:
        ok = False
    finally:
        s.close()
    t2 = time.monotonic()
    return ok, (t1 - t0) * 1000, (t2 - t0) * 1000


def worker(deadline):
    while time.monotonic() < deadline:
        r = one()
        with lock:
            results.append(r)


deadline = time.monotonic() + secs
threads = [threading.Thread(target=worker, args=(deadline,)) for _ in range(conc)]
for t in threads:
    t.start()
for t in threads:
    t.join()


def pct(v, q):
    return round(v[min(len(v) - 1, int(q * len(v)))], 3) if v else None


good = [r for r in results if r[0]]
conn = sorted(r[1] for r in good)
total = sorted(r[2] for r in good)
print(json.dumps({
    "attempts": len(results), "ok": len(good),
    "success": round(len(good) / len(results), 6) if results else 0.0,
    "connect_p50_ms": pct(conn, .5), "connect_p99_ms": pct(conn, .99),
    "request_p50_ms": pct(total, .5), "request_p99_ms": pct(total, .99),
}))
