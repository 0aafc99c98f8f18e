#!/usr/bin/python3
"""Legitimate clients of a fleet: COUNT connections to ADDRESS:PORT from
kernel-chosen ports, THREADS at a time, each sending `ping` and reading the
answering node's `pong NAME`. Prints one JSON line: how many succeeded,
the failures' reasons, and how many each node answered.

  clients.py ADDRESS PORT COUNT THREADS
"""
import collections
import json
import socket
import sys
import threading

addr, port, count, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
nodes = collections.Counter()
failures = collections.Counter()
todo = list(range(count))


def one():
    with socket.create_connection((addr, port), timeout=5) as c:
        c.sendall(b"ping\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = c.recv(64)
            if not chunk:
                break
            answer += chunk
    word, _, name = answer.decode().strip().partition(" ")
    if word != "pong":
        raise ValueError(f"answer {answer!r}")
    return name


def worker():
    while True:
        with lock:
            if not todo:
                return
            todo.pop()
        try:
            name = one()
            with lock:
                nodes[name] += 1
        except Exception as e:  # noqa: BLE001 - every failure is counted
            with lock:
                failures[type(e).__name__] += 1


ts = [threading.Thread(target=worker) for _ in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print(json.dumps({"ok": sum(nodes.values()), "failures": failures, "nodes": nodes}))
