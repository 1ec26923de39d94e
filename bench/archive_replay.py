"""Replay from the archive plus the hot tail (issue 13's target: >= 100,000 events/s over
>= 1,000,000 events), as ``replay_from_archive_events_per_s`` in bench.run, or alone:

    python -m bench.archive_replay                     # 1,000,000 events, 1 then 2 processes
    python -m bench.archive_replay --events 200000 --processes 2

A synthetic log of finished one-step executions (bench.common.write_synthetic_log, as the replay
scenario builds it) is written to a private redis-server; all but the tail (``--hot-share``, 5%
by default) is archived to a directory by the archiver, with the segment size it is configured
with, and trimmed from Redis, so the rebuild really reads the segments; the tail is written after
and stays hot. The live projector folds the log as it is written (before the archiving, and the
tail after), so there are live views to hold the rebuilds against. Then
``projections.replay.rebuild`` runs with each number of processes in turn (each rebuild of the
same unswitched version: the previous one's views are dropped first, outside the time); every
rebuild must have found every event and every execution, and its views must equal the live ones
(``replay.compare``, outside the time).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.common import Report, bench_settings, fresh_runtime, write_synthetic_log
from engine.archive.archiver import Archiver
from engine.archive.copy import Cut
from engine.runtime import Runtime
from projections.namespace import current_version
from projections.projector import Projector

HOT_SHARE = 0.05


@dataclass(frozen=True, slots=True)
class ArchiveReplay:
    """What one run measured: events/s per number of processes, and the log's make-up."""

    events: int
    archived: int
    hot: int
    rates: dict[int, float]

    @property
    def best(self) -> float:
        return max(self.rates.values())


async def _no_consumers(partition: int) -> dict[str, str]:
    return {}  # no projector runs here: nothing but the archive holds the trim back


@dataclass(frozen=True, slots=True)
class ArchivedLog:
    """The log built: its runtime (archive on a directory, hot window of zero) and its make-up."""

    runtime: Runtime
    archived: int
    hot: int
    segments: int

    @property
    def events(self) -> int:
        return self.archived + self.hot


async def build_archived_log(
    url: str, events: int, directory: Path, hot_share: float = HOT_SHARE
) -> ArchivedLog:
    """``events`` synthetic log entries in ``url``'s emptied Redis, all but ``hot_share`` of them
    archived into ``directory`` and trimmed from Redis, the rest written after and left hot, all
    of it folded by the live projector. The caller closes the runtime."""
    settings = replace(
        bench_settings(url), archive_url=f"file://{directory / 'archive'}", hot_seconds=0
    )
    runtime = await fresh_runtime(settings)
    hot = int(events * hot_share) // 5 * 5
    cold = await write_synthetic_log(runtime, events - hot) * 5
    await Projector(runtime, feed=False).run_until_idle()
    # Segments as the archiver cuts them (up to 20,000 entries), the last of each partition cut
    # at once, however short, and after the clock has left the last entry's millisecond.
    cut = replace(Cut.of(settings), min_entries=1, max_wait_ms=0)
    await asyncio.sleep(0.002)
    archiver = Archiver(runtime.store, runtime.archive, _no_consumers, cut=cut)
    await archiver.run_until_idle()
    left = sum([await runtime.store.log.log_length(p) for p in runtime.store.partitions])
    if archiver.stats.entries != cold or left:
        await runtime.close()
        raise RuntimeError(
            f"the archiver took {archiver.stats.entries:,} of {cold:,} entries and left "
            f"{left:,} in Redis"
        )
    hot = await write_synthetic_log(runtime, hot) * 5
    await Projector(runtime, feed=False).run_until_idle()
    return ArchivedLog(runtime, cold, hot, archiver.stats.segments)


async def bench_archive_replay(
    report: Report,
    url: str,
    events: int,
    processes: list[int],
    directory: Path,
    hot_share: float = HOT_SHARE,
) -> ArchiveReplay:
    """Build the archived log and its hot tail in ``url``'s Redis and ``directory``, then time a
    rebuild with each number of ``processes``."""
    from projections import replay

    t = time.perf_counter()
    built = await build_archived_log(url, events, directory, hot_share)
    runtime, total = built.runtime, built.events
    try:
        print(
            f"  ({built.archived:,} events archived in {built.segments} segments and trimmed, "
            f"{built.hot:,} hot, in {time.perf_counter() - t:.1f}s)",
            flush=True,
        )
        rates: dict[int, float] = {}
        for n in processes:
            # The previous run's views dropped first, outside the time (the rebuild would).
            await replay.drop(runtime, await current_version(runtime.redis, runtime.store.keys) + 1)
            result = await replay.rebuild(runtime, processes=n)
            if result.events != total or result.executions != total // 5:
                raise RuntimeError(
                    f"the rebuild found {result.events:,} events and {result.executions:,} "
                    f"executions of {total:,} and {total // 5:,}"
                )
            rates[n] = result.events / result.seconds
            parity = await replay.compare(runtime, result.previous_version, result.version)
            if not parity.identical or parity.count_b != total // 5:
                raise RuntimeError(f"the rebuilt views are not the live ones: {parity.describe()}")
            report.add(
                "replay from archive + hot tail: events/s",
                f"{rates[n]:,.0f}",
                f"{result.events:,} events ({built.archived:,} archived, {built.hot:,} hot), "
                f"{result.executions:,} views in {result.seconds:.1f}s "
                f"({result.processes} process(es)); every view equal to the live projector's",
            )
        return ArchiveReplay(total, built.archived, built.hot, rates)
    finally:
        await runtime.close()


def main() -> None:
    from tests.servers import redis_server

    parser = argparse.ArgumentParser(
        description="replay from the archive plus the hot tail: events/s (issue 13's target)"
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    parser.add_argument(
        "--processes", type=int, nargs="+", default=[1, 2], help="rebuild with each in turn"
    )
    parser.add_argument(
        "--hot-share", type=float, default=HOT_SHARE, help="share of the log left hot in Redis"
    )
    args = parser.parse_args()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="cs-bench-") as tmp, redis_server() as server:
        result = asyncio.run(
            bench_archive_replay(
                report, server.url, args.events, args.processes, Path(tmp), args.hot_share
            )
        )
    print(f"best: {result.best:,.0f} events/s over {result.events:,} events")


if __name__ == "__main__":
    main()
