"""The realtime benchmark's subscribers, in a process of their own (``bench.realtime`` starts
several), so their reading never shares an event loop with the API or the writer.

    python -m bench.realtime_clients URLS_FILE OUT_FILE

Connects one WebSocket per line of URLS_FILE (``websockets``, permessage-deflate offered as
browsers do), ``CONNECT_BATCH`` handshakes at a time, waits for each one's ``reset``, prints
``connected N`` on stdout, then records every ``event`` message: execution id, seq, its cursor's
milliseconds (Redis's clock when the projector added the feed entry) and the wall clock when it
arrived. A line ``stop`` on stdin closes the connections and writes the records and the close
codes to OUT_FILE (JSON), then ``done`` on stdout.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import anyio
import orjson
from anyio.abc import TaskGroup
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

CONNECT_BATCH = 50


class Records:
    def __init__(self) -> None:
        self.events: list[tuple[str, int, int, float]] = []
        self.closed: dict[int, int] = {}


async def _subscribe(url: str, records: Records, tg: TaskGroup) -> ClientConnection:
    conn = await connect(url, ping_interval=None, open_timeout=120, close_timeout=5)
    first = orjson.loads(await conn.recv())
    assert first["type"] == "reset", first

    async def listen() -> None:
        try:
            async for raw in conn:
                now = time.time()
                message = orjson.loads(raw)
                if message["type"] == "event":
                    cursor_ms = int(message["cursor"].partition("-")[0])
                    records.events.append((message["execution_id"], message["seq"], cursor_ms, now))
        except ConnectionClosed:
            pass
        code = conn.close_code or 1006
        records.closed[code] = records.closed.get(code, 0) + 1

    tg.start_soon(listen)
    return conn


async def subscribe_all(urls: list[str]) -> Records:
    """Connect, record until ``stop``, close; what was received."""
    records = Records()
    conns: list[ClientConnection] = []
    async with anyio.create_task_group() as tg:

        async def join(url: str) -> None:
            conns.append(await _subscribe(url, records, tg))

        for start in range(0, len(urls), CONNECT_BATCH):
            async with anyio.create_task_group() as handshakes:
                for url in urls[start : start + CONNECT_BATCH]:
                    handshakes.start_soon(join, url)
        print(f"connected {len(conns)}", flush=True)
        stdin = anyio.wrap_file(sys.stdin)
        while (await stdin.readline()).strip() not in ("stop", ""):
            pass
        async with anyio.create_task_group() as closing:
            for conn in conns:
                closing.start_soon(conn.close)
    return records


def main(urls_file: Path, out: Path) -> None:
    urls = urls_file.read_text().split()
    records = anyio.run(subscribe_all, urls, backend_options={"use_uvloop": True})
    result: dict[str, Any] = {"events": records.events, "closed": records.closed}
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS))
    print("done", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
