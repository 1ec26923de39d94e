"""What one execution costs the worker: its CPU time per execution, and optionally its profile.

``python -m bench.worker_cost --n 10000 --steps 1`` queues N executions (bench.drain's preload, in a
private redis-server), drains them with one worker process and one projector, and prints the
worker's CPU time (user + system, from /proc) per execution and the Redis commands executed per
execution (INFO commandstats: preload, worker and projector together). CPU time is what a loaded
box distorts least; a rate measured beside other busy processes is mostly their noise.

``--profile FILE`` runs the worker under pyinstrument (the ``bench`` extra) and writes its
text report to FILE when the drain is over (the profiler slows the worker down: its times are
shares, not rates).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import PARTITIONS, THREE_STEPS, TRANSCRIPT, bench_settings, fresh_runtime
from bench.drain import _preload, _wait_drained
from tests.processes import ROOT, Role, role_env
from tests.servers import redis_server

_WORKER_ENV = {
    "CLIPSTREAM_PARTITIONS": str(PARTITIONS),
    "CLIPSTREAM_WORKER_CONCURRENCY": "200",
    "CLIPSTREAM_LEASE_MS": "15000",
    "CLIPSTREAM_HEARTBEAT_MS": "3000",
    "CLIPSTREAM_CLAIM_INTERVAL_MS": "5000",
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_worker(env: dict[str, str], profile: Path | None, logs: Path) -> subprocess.Popen[bytes]:
    """One worker process, under pyinstrument when ``profile`` names its report."""
    command = [sys.executable, "-m", "api.cli", "worker"]
    if profile is not None:
        command[1:1] = ["-m", "pyinstrument", "-o", str(profile)]
    with (logs / "worker.log").open("w") as out:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=out)


async def measure(n: int, tools: tuple[str, ...], profile: Path | None, logs: Path) -> str:
    """Drain ``n`` executions of ``tools``; the summary line."""
    with redis_server() as server:
        runtime = await fresh_runtime(bench_settings(server.url))
        try:
            await _preload(runtime, n, tools)
            env = role_env(server.url, **_WORKER_ENV)
            worker = _start_worker(env, profile, logs)
            projector = Role(["projector"], env, logs / "projector.log")
            try:
                started = time.monotonic()
                await _wait_drained(runtime)
                wall = time.monotonic() - started
                used = cpu_seconds(worker.pid)
                stats = await runtime.redis.info("commandstats")
            finally:
                worker.send_signal(signal.SIGINT)  # pyinstrument writes its report on the way out
                worker.wait(60)
                projector.terminate()
        finally:
            await runtime.close()
    calls = sum(int(v["calls"]) for v in stats.values())
    return (
        f"{n:,} executions of {len(tools)} step(s): worker CPU {used:.2f} s "
        f"({1000 * used / n:.3f} ms per execution), {calls / n:.1f} Redis commands per execution, "
        f"drained in {wall:.1f} s wall (start-up included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000, help="executions to drain")
    parser.add_argument("--steps", type=int, choices=(1, 3), default=1, help="workflow length")
    parser.add_argument("--profile", type=Path, help="write the worker's pyinstrument report here")
    parser.add_argument("--logs", type=Path, default=Path("."), help="where the roles' logs go")
    args = parser.parse_args()
    tools = TRANSCRIPT if args.steps == 1 else THREE_STEPS
    print(asyncio.run(measure(args.n, tools, args.profile, args.logs)))


if __name__ == "__main__":
    main()
