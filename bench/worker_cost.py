"""What one execution costs the worker: its CPU time per execution, and optionally its profile.

``python -m bench.worker_cost --n 10000 --steps 1`` queues N executions (bench.drain's preload, in a
private redis-server), drains them with one worker process and one projector, and prints the CPU
time (user + system, from /proc) per execution of the worker, of the projector and of the
redis-server, and the Redis commands executed per execution (INFO commandstats: preload, worker
and projector together). The roles' start-up (imports, connecting) is left out: their CPU is
counted from the moment the first execution is started. CPU time is what a loaded box distorts
least; a rate measured beside other busy processes is mostly their noise. All three processes
share the box's cores during a drain, so all three bound its rate.

``--profile FILE`` runs the worker under pyinstrument (the ``bench`` extra) and writes its
text report to FILE when the drain is over (the profiler slows the worker down: its times are
shares, not rates).

``--by-script`` has Redis log every command of the drain (SLOWLOG with no threshold) and prints,
per execution, the calls and the time of each command and of each of the hot path's Lua scripts
by name (APPEND_BATCH, DISPATCH, COMMIT …): where Redis's share goes. A script's time includes
the commands it calls, which are listed on their own too; the log itself costs Redis time, so
the CPU figures of such a run read high. It holds every command in the server's memory (some
hundreds of bytes each): keep ``--n`` in the tens of thousands.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from bench.common import (
    PARTITIONS,
    THREE_STEPS,
    TRANSCRIPT,
    bench_settings,
    cpu_seconds,
    fresh_runtime,
    script_names,
    slowlog_by_command,
)
from bench.drain import _preload, _span, _wait_drained
from engine.runtime import Runtime
from tests.processes import ROOT, Role, role_env
from tests.servers import redis_server

WORKER_ENV = {
    "CLIPSTREAM_PARTITIONS": str(PARTITIONS),
    "CLIPSTREAM_WORKER_CONCURRENCY": "200",
    "CLIPSTREAM_LEASE_MS": "15000",
    "CLIPSTREAM_HEARTBEAT_MS": "3000",
    "CLIPSTREAM_CLAIM_INTERVAL_MS": "5000",
}


def _start_worker(env: dict[str, str], profile: Path | None, logs: Path) -> subprocess.Popen[bytes]:
    """One worker process, under pyinstrument when ``profile`` names its report."""
    command = [sys.executable, "-m", "api.cli", "worker"]
    if profile is not None:
        command[1:1] = ["-m", "pyinstrument", "-o", str(profile)]
    with (logs / "worker.log").open("w") as out:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)


async def _first_append(runtime: Runtime, queued: int, pids: list[int]) -> list[float]:
    """Wait until an execution has been started (the partition logs hold more than the
    ``queued`` requests): the CPU times of ``pids`` then, which is what their start-up cost."""
    store = runtime.store
    while True:
        pipe = store.redis.pipeline(transaction=False)
        for p in store.partitions:
            pipe.xlen(store.keys.log(p))
        if sum(await pipe.execute()) > queued:
            return [cpu_seconds(pid) for pid in pids]
        await asyncio.sleep(0.005)


async def measure(
    n: int,
    tools: tuple[str, ...],
    profile: Path | None,
    logs: Path,
    by_script: bool = False,
) -> str:
    """Drain ``n`` executions of ``tools``; the summary line (and with ``by_script`` the table
    of Redis's time by command and script)."""
    table = ""
    with redis_server() as server:
        assert server.proc is not None
        runtime = await fresh_runtime(bench_settings(server.url))
        try:
            await _preload(runtime, n, tools)
            if by_script:
                await runtime.redis.config_set("slowlog-max-len", 100_000_000)
                await runtime.redis.config_set("slowlog-log-slower-than", 0)
                await runtime.redis.slowlog_reset()
            env = role_env(server.url, **WORKER_ENV)
            worker = _start_worker(env, profile, logs)
            projector = Role(["projector"], env, logs / "projector.log")
            pids = [worker.pid, projector.proc.pid, server.proc.pid]
            try:
                before = await _first_append(runtime, n, pids)
                started = time.monotonic()
                await _wait_drained(runtime)
                wall = time.monotonic() - started
                used = [cpu_seconds(pid) - at for pid, at in zip(pids, before, strict=True)]
                stats = await runtime.redis.info("commandstats")
                first, last, done, _, _ = await _span(runtime)
                if by_script:
                    table = await _by_script(server.url, n)
            finally:
                worker.send_signal(signal.SIGINT)  # pyinstrument writes its report on the way out
                worker.wait(60)
                projector.terminate()
        finally:
            await runtime.close()
    calls = sum(int(v["calls"]) for v in stats.values())
    worker_s, projector_s, redis_s = used
    return (
        f"{n:,} executions of {len(tools)} step(s), CPU ms per execution: "
        f"worker {1000 * worker_s / n:.3f}, projector {1000 * projector_s / n:.3f}, "
        f"redis-server {1000 * redis_s / n:.3f} (all {1000 * sum(used) / n:.3f}); "
        f"{calls / n:.1f} Redis commands per execution; {done / (last - first) * 1000:,.0f} "
        f"executions/s (first start to last completion); the worker busy "
        f"{100 * worker_s / wall:.0f} % of the {wall:.1f} s from the first start to every view "
        "current"
    ) + table


async def _by_script(url: str, n: int) -> str:
    """Redis's time during the drain by command and script, per execution, from SLOWLOG."""
    # A client of its own: reading millions of entries takes longer than the runtime's timeout.
    client = aioredis.Redis.from_url(url, socket_timeout=600)
    try:
        await client.config_set("slowlog-log-slower-than", 10_000)
        entries = await client.slowlog_get(-1)
    finally:
        await client.aclose()
    return slowlog_table(entries, n)


def slowlog_table(entries: list[dict[str, Any]], n: int) -> str:
    """SLOWLOG entries summed by command (a call of a known script by its name), per execution of
    ``n``, the costliest first."""
    by = slowlog_by_command(entries, script_names())
    rows = sorted(by.items(), key=lambda item: -sum(item[1]))
    lines = [
        "",
        "",
        "Redis by command and script, per execution (a script's time includes the commands it",
        "calls, listed too; from SLOWLOG, which itself costs Redis time):",
    ]
    lines += [
        f"  {name:32} {len(ms) / n:7.2f} calls {1000 * sum(ms) / n:8.1f} us" for name, ms in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="executions to drain")
    parser.add_argument("--steps", type=int, choices=(1, 3), default=1, help="workflow length")
    parser.add_argument("--profile", type=Path, help="write the worker's pyinstrument report here")
    parser.add_argument("--logs", type=Path, default=Path("."), help="where the roles' logs go")
    parser.add_argument(
        "--by-script",
        action="store_true",
        help="also print Redis's time by command and Lua script (SLOWLOG; Redis reads high)",
    )
    args = parser.parse_args()
    tools = TRANSCRIPT if args.steps == 1 else THREE_STEPS
    print(asyncio.run(measure(args.n, tools, args.profile, args.logs, args.by_script)))


if __name__ == "__main__":
    main()
