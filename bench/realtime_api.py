"""``clipstream api`` as the realtime benchmark runs it: the same app behind the same uvicorn
configuration (``api.cli.roles``), plus the server's own measurements on demand.

    python -m bench.realtime_api --port P --stats FILE [--ws IMPL] [--tracemalloc FRAMES]

SIGUSR2 clears the hub's samples (the start of a measured window); SIGUSR1 writes them to FILE
as JSON: every delivery's feed entry → write returned (ms), the event loop's lag and the GC's
pauses (api.loop_probe), and the subscriber count. The benchmark compares the server's side of
each delivery with what its clients, in other processes, saw.

``--ws`` serves the WebSockets with another of uvicorn's implementations than ``clipstream
api``'s (``bench.realtime_memory`` compares them); with ``--tracemalloc`` the process traces its
allocations once it is set up (that many frames each) and SIGUSR1 also writes a snapshot to FILE's
``.snapshot`` sibling (``bench.realtime_memory`` reads where each connection's bytes go).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import orjson

from api.cli.redact import redact_tokens_in_server_logs
from api.cli.roles import FREEZE_EVERY, _uvicorn_server
from api.realtime.hub import FeedHub
from engine.runtime import Runtime
from engine.settings import Settings


def stats(hub: FeedHub) -> dict[str, Any]:
    """What the hub measured since it was last cleared."""
    return {
        "deliveries_ms": hub.deliveries.values(),
        "deliveries": hub.deliveries.count,
        "loop_lag_ms": hub.probe.lag.values(),
        "gc_pauses_ms": hub.probe.gc_pauses.values(),
        "gc_full_pauses_ms": hub.probe.gc_full_pauses.values(),
        "subscribers": sum(len(s) for s in hub._subscribers.values()),
    }


async def serve(port: int, out: Path, ws: str | None = None, trace: int = 0) -> None:
    runtime = await Runtime.open(Settings.from_env())
    try:
        runtime.require_secrets()
        server = _uvicorn_server(runtime, "127.0.0.1", port)
        if ws is not None:
            server.config.ws = ws  # (read when the server starts)
        hub: FeedHub = server.config.app.state.feed_hub
        loop = asyncio.get_running_loop()

        def dump() -> None:
            if tracemalloc.is_tracing():
                gc.collect()
                tracemalloc.take_snapshot().dump(str(out.with_suffix(".snapshot")))
            out.write_bytes(orjson.dumps(stats(hub)))

        def clear() -> None:
            probe = hub.probe
            for samples in (hub.deliveries, probe.lag, probe.gc_pauses, probe.gc_full_pauses):
                samples.clear()

        loop.add_signal_handler(signal.SIGUSR1, dump)
        loop.add_signal_handler(signal.SIGUSR2, clear)
        # As api.cli.roles._serve_api does.
        redact_tokens_in_server_logs()
        gc.freeze()
        hub.freeze_every = FREEZE_EVERY
        if trace:
            # Not from the start: tracing the imports takes longer than the start-up may.
            import uvicorn.protocols.websockets.auto  # noqa: F401  (what config.load() imports)

            tracemalloc.start(trace)
        await server.serve()
    finally:
        await runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--ws", help="uvicorn's WebSocket implementation (default: the API's)")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES")
    args = parser.parse_args()
    anyio.run(
        serve,
        args.port,
        args.stats,
        args.ws,
        args.tracemalloc,
        backend_options={"use_uvloop": True},
    )


if __name__ == "__main__":
    main()
