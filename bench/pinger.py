"""A Redis round-trip sampler for bench.shared_box: PING every ``interval`` ms until SIGTERM,
then print the round trips (µs), one per line, on stdout.

Run it at a real-time priority (``chrt -f``) so that what it measures is Redis answering late
(busy with other clients' commands, or waiting for a core), not the sampler itself waiting.
"""

from __future__ import annotations

import signal
import socket
import sys
import time


def main() -> None:
    port, interval_ms = int(sys.argv[1]), float(sys.argv[2])
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts: list[int] = []
    next_at = time.perf_counter()
    while not stop:
        t = time.perf_counter()
        sock.sendall(b"PING\r\n")
        buf = b""
        while not buf.endswith(b"\r\n"):
            buf += sock.recv(64)
        rtts.append(int((time.perf_counter() - t) * 1e6))
        next_at += interval_ms / 1000
        delay = next_at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.perf_counter()
    sys.stdout.write("\n".join(map(str, rtts)) + "\n")


if __name__ == "__main__":
    main()
