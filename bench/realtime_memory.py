"""Where a realtime connection's memory goes: the API process's RSS and its traced allocations
with no subscriber and with ``--connections`` of them, per connection, by who allocated them.

    python -m bench.realtime_memory --connections 2000
    python -m bench.realtime_memory --connections 2000 --ws websockets-sansio
    python -m bench.realtime_memory --connections 2000 --tracemalloc 2000 --top 30

For each WebSocket implementation asked for (default: the API's own, api.realtime.websocket; or one
of uvicorn's: ``websockets``, ``websockets-sansio``, ``wsproto`` if installed), one API process
(``bench.realtime_api``, ``clipstream api``'s app and uvicorn configuration) against a private
redis-server, subscribers in a process of their own (``bench.realtime_clients``, one owner
each): the RSS at 0 and at ``--connections`` subscribers, and the growth per connection. With
``--tracemalloc N`` another run of the same traces the API's allocations (its RSS is then not
comparable: the traces cost memory) and groups the growth by the innermost frame of the
allocation's traceback that is not the standard library's (uvicorn's protocol, the websockets or
wsproto library, Starlette's WebSocket, the hub's subscription...), plus, for what the standard
library allocated on a known caller's behalf, the caller. Nothing is written: the report is
printed (Markdown); ``--keep DIR`` keeps the snapshots, ``--analyse DIR`` reads them again.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sysconfig
import tempfile
import tracemalloc
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import anyio

from api.auth import mint_session_token
from bench.common import PARTITIONS, bench_settings
from bench.realtime import ApiProcess, ClientProcess, _allow_open_files, _connect, rss_now_mib
from engine.log.ids import new_id
from engine.runtime import Runtime
from tests.processes import ROOT, role_env, wait_http
from tests.servers import redis_server

SETTLE_S = 2.0
_STDLIB = sysconfig.get_paths()["stdlib"]


async def measure(
    url: str, logs: Path, *, connections: int, ws: str | None, trace: int
) -> tuple[float, float, Path | None]:
    """RSS (MiB) at 0 and at ``connections`` subscribers; with ``trace``, the two snapshots'
    directory (``0.snapshot``, ``n.snapshot``)."""
    _allow_open_files(2 * connections + 1_024)
    env = role_env(url, CLIPSTREAM_PARTITIONS=str(PARTITIONS), CLIPSTREAM_SIM_LATENCY_MS="0")
    settings = replace(bench_settings(url), jwt_secret=env["CLIPSTREAM_JWT_SECRET"])
    runtime = await Runtime.open(settings)
    await runtime.redis.flushall()
    await runtime.close()
    runtime = await Runtime.open(settings)
    args: list[str] = []
    if ws is not None:
        args += ["--ws", ws]
    if trace:
        args += ["--tracemalloc", str(trace)]
    api = ApiProcess(env, logs, 0, tuple(args))
    clients: ClientProcess | None = None
    try:
        wait_http(f"http://127.0.0.1:{api.port}/healthz", role=api.role)
        owners = [new_id("acc") for _ in range(connections)]
        urls = [
            f"ws://127.0.0.1:{api.port}/v1/realtime?token={mint_session_token(runtime, owner)}"
            for owner in owners
        ]
        await anyio.sleep(SETTLE_S)
        snapshots = logs / "snapshots"
        snapshots.mkdir(exist_ok=True)
        if trace:
            await api.stats()
            api.stats_path.with_suffix(".snapshot").rename(snapshots / "0.snapshot")
        idle = rss_now_mib(api.proc.pid)
        clients = ClientProcess(urls, env, logs, 0)
        await _connect([clients])
        await anyio.sleep(SETTLE_S)
        if trace:
            await api.stats()
            api.stats_path.with_suffix(".snapshot").rename(snapshots / "n.snapshot")
        full = rss_now_mib(api.proc.pid)
        await clients.stop()
    finally:
        if clients is not None:
            clients.kill()
        api.stop()
        await runtime.close()
    return idle, full, snapshots if trace else None


def _owner(frames: Sequence[tracemalloc.Frame]) -> tuple[str, str]:
    """(who, via): the innermost frame outside the standard library (who asked), and the
    innermost frame (what allocated), both as ``package/module.py``."""

    def short(filename: str) -> str:
        if filename.startswith(str(ROOT)):
            return filename[len(str(ROOT)) :].lstrip("/")
        parts = Path(filename).parts
        if "site-packages" in parts:
            return "/".join(parts[parts.index("site-packages") + 1 :])
        if filename.startswith(_STDLIB):
            return "stdlib/" + filename[len(_STDLIB) :].lstrip("/")
        return "/".join(parts[-2:])

    innermost = short(frames[0].filename) if frames else "?"
    for frame in frames:
        if not frame.filename.startswith(_STDLIB) and not frame.filename.startswith("<"):
            return short(frame.filename), innermost
    return innermost, innermost


def breakdown(snapshots: Path, connections: int, top: int) -> str:
    """The traced growth per connection, by who asked for it and by traceback (Markdown)."""
    before = tracemalloc.Snapshot.load(str(snapshots / "0.snapshot"))
    after = tracemalloc.Snapshot.load(str(snapshots / "n.snapshot"))
    diffs = after.compare_to(before, "traceback")
    by_owner: dict[str, int] = defaultdict(int)
    blocks: dict[str, int] = defaultdict(int)
    for diff in diffs:
        who, _via = _owner(list(reversed(diff.traceback)))  # most recent call first
        by_owner[who] += diff.size_diff
        blocks[who] += diff.count_diff
    total = sum(by_owner.values())
    lines = [
        f"Traced growth: {total / connections:,.0f} B per connection "
        f"({total / 2**20:.1f} MiB for {connections:,}).",
        "",
        "| who asked (innermost frame outside the standard library) | B per connection | blocks |",
        "|---|---:|---:|",
    ]
    for who, size in sorted(by_owner.items(), key=lambda kv: -kv[1]):
        if abs(size) / connections >= 16:
            lines.append(f"| {who} | {size / connections:,.0f} | {blocks[who] / connections:.1f} |")
    lines += ["", f"Top {top} tracebacks (innermost first, 4 frames):", ""]
    for diff in diffs[:top]:
        frames = list(reversed(diff.traceback))[:4]
        where = " < ".join(f"{_owner([f])[1]}:{f.lineno}" for f in frames)
        lines.append(
            f"- {diff.size_diff / connections:,.0f} B, {diff.count_diff / connections:.1f} "
            f"blocks: {where}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="where a realtime connection's memory goes")
    parser.add_argument("--connections", type=int, default=2_000)
    parser.add_argument("--ws", action="append", help="uvicorn's implementation (repeatable)")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="CONNECTIONS",
                        help="also trace a run with this many connections")  # fmt: skip
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--rss", action=argparse.BooleanOptionalAction, default=True,
                        help="the untraced RSS run (default: yes)")  # fmt: skip
    parser.add_argument("--analyse", type=Path, metavar="DIR",
                        help="only print the breakdown of the snapshots in DIR")  # fmt: skip
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the snapshots in DIR")
    args = parser.parse_args()

    if args.analyse is not None:
        print(breakdown(args.analyse, args.tracemalloc or args.connections, args.top))
        return

    async def run() -> None:
        for ws in args.ws or [None]:
            name = ws or "the API's"
            if args.rss:
                with tempfile.TemporaryDirectory(prefix="cs-mem-") as tmp, redis_server() as srv:
                    idle, full, _ = await measure(
                        srv.url, Path(tmp), connections=args.connections, ws=ws, trace=0
                    )
                per = (full - idle) * 1024 / args.connections
                print(
                    f"ws={name}: RSS {idle:.1f} MiB idle, {full:.1f} MiB with "
                    f"{args.connections:,} connections: {per:.1f} KiB per connection over the "
                    "idle process",
                    flush=True,
                )
            if args.tracemalloc:
                with tempfile.TemporaryDirectory(prefix="cs-mem-") as tmp, redis_server() as srv:
                    n = args.tracemalloc
                    _, _, snaps = await measure(
                        srv.url, Path(tmp), connections=n, ws=ws, trace=args.frames
                    )
                    assert snaps is not None
                    if args.keep is not None:
                        args.keep.mkdir(parents=True, exist_ok=True)
                        for snap in snaps.iterdir():
                            shutil.copy(snap, args.keep / snap.name)
                    gc.collect()
                    print(f"\nws={name}, traced with {n:,} connections:\n", flush=True)
                    print(breakdown(snaps, n, args.top), flush=True)

    anyio.run(run)


if __name__ == "__main__":
    main()
