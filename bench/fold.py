"""The projectors' fold rate (``projectors_2_vs_1`` in bench.run): a synthetic log of finished
one-step executions folded by K ``clipstream projector`` processes from nothing, events/s.

Start-up is excluded exactly: the log is written aside (its own keys, in each partition's slot),
the K projectors start on empty logs and split the partitions among themselves, and only then is
the log renamed into place, in one pipeline; the clock runs from there to every checkpoint at its
log's end.

One fold of 300,000 events takes a few seconds, and on a 2-core box the rate of two projectors
moves by a fifth from one such run to the next (three processes share two cores: the scheduler's
luck), so :func:`bench_fold_ratio` alternates one and two projectors ``rounds`` times and takes
the medians. It also reports how busy each projector process and the redis-server were over the
timed fold (their CPU time over its wall time, /proc): with two projectors, whether they wait on
the cores or on their round trips. From one projector's fold it reads the most two could reach
on this box (:func:`box_bound`): the projectors share the cores with Redis, so when one projector
and Redis already keep 1.5 of 2 cores busy, two can fold at most 2 / 1.5 = 1.33 times as fast."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from bench.common import (
    PARTITIONS,
    Report,
    bench_role_env,
    bench_settings,
    cpu_seconds,
    fresh_runtime,
    runs_note,
    write_synthetic_log,
)
from bench.drain import _checkpoints, _log_tails
from engine.runtime import Runtime
from tests.processes import Role

DEADLINE_S = 600
POLL_S = 0.05


@dataclass(frozen=True)
class Fold:
    """One timed fold: its rate, and the share of one core each projector process and the
    redis-server were busy for meanwhile."""

    per_s: float
    projectors_busy: list[float]
    redis_busy: float

    @property
    def cores_used(self) -> float:
        """What the projectors and Redis kept busy together, in cores."""
        return sum(self.projectors_busy) + self.redis_busy


class FoldRatio(NamedTuple):
    ratio: float  # the median fold rate of two projectors over the median of one
    box_bound: float  # the most that ratio could be on this box (box_bound)


def box_bound(one: Fold, cores: int | None = None) -> float:
    """The most two projectors could fold over one on this box (or ``cores``), had each event
    the CPU cost it had with one: the cores over what one projector and Redis kept busy, at
    most 2."""
    if one.cores_used <= 0:
        return 2.0
    return min(2.0, (cores or os.cpu_count() or 1) / one.cores_used)


async def bench_fold_ratio(
    report: Report, url: str, events: int, logs: Path, rounds: int = 3
) -> FoldRatio:
    """The median fold rate of two projector processes over the median of one, each measured
    ``rounds`` times, alternating (one, two, one, two …) so a drift of the box touches both;
    and the most it could be on this box (:func:`box_bound`, the median over one's folds)."""
    folds: dict[int, list[Fold]] = {1: [], 2: []}
    for _ in range(rounds):
        for projectors in (1, 2):
            folds[projectors].append(await bench_fold(url, events, projectors, logs))
    for projectors, got in folds.items():
        report.add(
            f"projection: events folded/s, {projectors} projector process(es)",
            f"{statistics.median(f.per_s for f in got):,.0f}",
            runs_note([f.per_s for f in got], f"folds of {events:,} events")
            or f"one fold of {events:,} events",
        )
        busy = [statistics.median(f.projectors_busy[i] for f in got) for i in range(projectors)]
        report.add(
            f"projection: busy while folding, {projectors} projector process(es)",
            " + ".join(f"{share:.0%}" for share in busy)
            + f" / {statistics.median(f.redis_busy for f in got):.0%}",
            "each projector process / the redis-server, as shares of one core (medians); the "
            "rest of the box idle: "
            + f"{statistics.median(_idle(f) for f in got):.0%} of its cores",
        )
    rates = {p: statistics.median(f.per_s for f in got) for p, got in folds.items()}
    bound = statistics.median(box_bound(f) for f in folds[1])
    report.add(
        "projection: the most two projectors could fold over one on this box",
        f"{bound:.2f}",
        f"{os.cpu_count()} cores over what one projector and Redis kept busy (medians), had "
        "each event the CPU cost it had with one",
    )
    return FoldRatio(rates[2] / rates[1], bound)


def _idle(fold: Fold, cores: int | None = None) -> float:
    """The share of the box's cores (or ``cores``) that neither the projectors nor Redis used
    during ``fold``."""
    return max(0.0, 1 - fold.cores_used / (cores or os.cpu_count() or 1))


async def bench_fold(url: str, events: int, projectors: int, logs: Path) -> Fold:
    """Events/s folded by ``projectors`` processes over a log of ``events`` entries (timed to
    ``POLL_S``), and how busy they and Redis were meanwhile."""
    runtime = await fresh_runtime(bench_settings(url))
    try:
        executions = await write_synthetic_log(runtime, events)
        total = executions * 5
        tails = await _log_tails(runtime)
        keys, redis = runtime.store.keys, runtime.redis
        pipe = redis.pipeline(transaction=False)
        for p in runtime.store.partitions:
            pipe.rename(keys.log(p), _aside(keys.log(p)))
        await pipe.execute()
        env = bench_role_env(
            url, CLIPSTREAM_PARTITIONS=str(PARTITIONS), CLIPSTREAM_LEASE_MS="15000"
        )
        procs = [
            Role(["projector"], env, logs / f"fold{projectors}-{i}.log") for i in range(projectors)
        ]
        try:
            deadline = time.monotonic() + DEADLINE_S
            while not _even(await _holders(runtime), projectors):
                _check(procs, deadline)
                await asyncio.sleep(POLL_S)
            pids = [proc.proc.pid for proc in procs]
            pids.append(int((await redis.info("server"))["process_id"]))
            pipe = redis.pipeline(transaction=False)
            for p in runtime.store.partitions:
                pipe.rename(_aside(keys.log(p)), keys.log(p))
            await pipe.execute()
            cpu_before = [cpu_seconds(pid) for pid in pids]
            started = time.perf_counter()
            while await _checkpoints(runtime) != tails:
                _check(procs, deadline)
                await asyncio.sleep(POLL_S)
            secs = time.perf_counter() - started
            busy = [
                (cpu_seconds(pid) - before) / secs if secs > 0 else 0.0
                for pid, before in zip(pids, cpu_before, strict=True)
            ]
        finally:
            for proc in procs:
                proc.terminate()
        return Fold(total / secs if secs > 0 else 0.0, busy[:-1], busy[-1])
    finally:
        await runtime.close()


def _aside(log: str) -> str:
    return f"{log}:aside"  # the same hash tag, so the same slot


def _even(held: list[int], projectors: int) -> bool:
    """Every partition held, by ``projectors`` projectors, in shares differing by one at most."""
    return len(held) == projectors and sum(held) == PARTITIONS and max(held) - min(held) <= 1


async def _holders(runtime: Runtime) -> list[int]:
    """How many partitions each projector holds a lease on."""
    store = runtime.store
    version = int(await store.redis.hget(store.keys.meta, "projection_version") or 1)
    pipe = store.redis.pipeline(transaction=False)
    for p in store.partitions:
        pipe.get(f"{store.keys.view_ns(p, version)}:lease")
    holders = [h for h in await pipe.execute() if h is not None]
    return [holders.count(h) for h in set(holders)]


def _check(procs: list[Role], deadline: float) -> None:
    for proc in procs:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"projector exited:\n{proc.output()[-2000:]}")
    if time.monotonic() > deadline:
        raise TimeoutError(f"fold did not finish within {DEADLINE_S} s")
