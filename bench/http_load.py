"""A small open-loop HTTP/1.1 load generator for the latency benchmark.

httpx costs about a millisecond of CPU per request, which on a 2-core box competes with the
server it measures. This client keeps ``connections`` keep-alive sockets, sends pre-built request
bytes at scheduled times, and measures each latency from the request's *scheduled* send time, so
a stalled server shows up in the numbers instead of slowing the schedule (no coordinated
omission). It also records how late it wrote each request (``late_ms``): when that is large
the generator, not the server, was the one waiting (for a core, or for a free connection).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    late_ms: list[float] = field(default_factory=list)  # write time - scheduled time


def build_request(method: str, path: str, host: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def transcript_post(port: int, item_id: str, auth: dict[str, str]) -> bytes:
    """``POST /v1/items/{item_id}/transcript`` (an empty JSON body) to the API on ``port``: the
    request of the latency benchmarks."""
    headers = {**auth, "Content-Type": "application/json"}
    path = f"/v1/items/{item_id}/transcript"
    return build_request("POST", path, f"127.0.0.1:{port}", headers, b"{}")


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length:
        await reader.readexactly(length)
    return status


async def open_loop(
    host: str,
    port: int,
    request: bytes | Sequence[bytes],
    *,
    rate: float,
    total: int,
    connections: int = 64,
) -> LoadResult:
    """Send ``total`` requests at ``rate`` per second over a pool of connections: copies of
    ``request``, or the given requests in turn."""
    result = LoadResult()
    requests = [request] if isinstance(request, bytes) else list(request)
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
    t0 = time.perf_counter() + 0.05
    for i in range(total):
        queue.put_nowait((t0 + i / rate, requests[i % len(requests)]))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                try:
                    scheduled, payload = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                delay = scheduled - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                result.late_ms.append((time.perf_counter() - scheduled) * 1000)
                writer.write(payload)
                status = await _read_response(reader)
                result.latencies_ms.append((time.perf_counter() - scheduled) * 1000)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return result
