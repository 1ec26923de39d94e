"""What one event costs the projector: its CPU time per event folding a synthetic log.

``python -m bench.projector_cost --events 50000`` writes a log of finished one-step executions
(bench.common.write_synthetic_log) into a private redis-server and folds it from nothing with one
projections.projector.Projector in this process (``run_until_idle``: views, indexes, feed
entries, checkpoints), and prints the CPU time (process_time: this process only, Redis apart)
per event. CPU time is what a loaded box distorts least; to compare two trees, run both at once
so they share whatever else the box is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench.common import bench_settings, fresh_runtime, write_synthetic_log
from projections.projector import Projector
from tests.servers import redis_server


async def measure(events: int) -> str:
    """Fold ``events`` synthetic log entries; the summary line."""
    with redis_server() as server:
        runtime = await fresh_runtime(bench_settings(server.url))
        try:
            executions = await write_synthetic_log(runtime, events)
            started_cpu, started = time.process_time(), time.monotonic()
            await Projector(runtime).run_until_idle()
            cpu, wall = time.process_time() - started_cpu, time.monotonic() - started
        finally:
            await runtime.close()
    folded = executions * 5
    return (
        f"{folded:,} events folded by one projector in process: CPU {cpu:.2f} s "
        f"({1e6 * cpu / folded:.1f} us per event), {wall:.1f} s wall"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="log entries to fold")
    args = parser.parse_args()
    print(asyncio.run(measure(args.events)))


if __name__ == "__main__":
    main()
