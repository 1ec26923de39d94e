"""The projectors' fold rate (``projectors_2_vs_1`` in bench.run): a synthetic log of finished
one-step executions folded by K ``clipstream projector`` processes from nothing, events/s.

Start-up is excluded exactly: the log is written aside (its own keys, in each partition's slot),
the K projectors start on empty logs and split the partitions among themselves, and only then is
the log renamed into place, in one pipeline; the clock runs from there to every checkpoint at its
log's end."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bench.common import (
    PARTITIONS,
    Report,
    bench_role_env,
    bench_settings,
    fresh_runtime,
    write_synthetic_log,
)
from bench.drain import _checkpoints, _log_tails
from engine.runtime import Runtime
from tests.processes import Role

DEADLINE_S = 600
POLL_S = 0.05


async def bench_fold(report: Report, url: str, events: int, projectors: int, logs: Path) -> float:
    """Events/s folded by ``projectors`` processes over a log of ``events`` entries."""
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
            pipe = redis.pipeline(transaction=False)
            for p in runtime.store.partitions:
                pipe.rename(_aside(keys.log(p)), keys.log(p))
            await pipe.execute()
            started = time.perf_counter()
            while await _checkpoints(runtime) != tails:
                _check(procs, deadline)
                await asyncio.sleep(POLL_S)
            secs = time.perf_counter() - started
        finally:
            for proc in procs:
                proc.terminate()
        rate = total / secs if secs > 0 else 0.0
        report.add(
            f"projection: events folded/s, {projectors} projector process(es)",
            f"{rate:,.0f}",
            f"{total:,} events in {secs:.1f}s (±{POLL_S}s)",
        )
        return rate
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
