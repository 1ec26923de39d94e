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


async def measure(n: int, tools: tuple[str, ...], profile: Path | None, logs: Path) -> str:
    """Drain ``n`` executions of ``tools``; the summary line."""
    with redis_server() as server:
        assert server.proc is not None
        runtime = await fresh_runtime(bench_settings(server.url))
        try:
            await _preload(runtime, n, tools)
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
