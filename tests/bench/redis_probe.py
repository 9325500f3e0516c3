#!/usr/bin/env python3
"""tests/bench/redis_probe.py PORT: PINGs Redis every 10 ms on one connection until SIGTERM, then prints the longest
round trip in ms. The ladder runs it beside each wrk run: a rung whose answers wait for Redis shows here whether Redis
itself was slow to answer (on this 2-core machine: not scheduled, see the README's "The stall")."""
import signal
import socket
import sys
import time

worst = 0.0
stop = False


def on_term(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_term)
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
while not stop:
    t0 = time.monotonic()
    c.sendall(b"PING\r\n")
    got = b""
    while not got.endswith(b"\r\n"):
        chunk = c.recv(64)
        if not chunk:
            stop = True
            break
        got += chunk
    worst = max(worst, (time.monotonic() - t0) * 1000)
    time.sleep(0.01)
print("%.1f" % worst)
