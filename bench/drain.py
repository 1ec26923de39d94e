"""The drain scenario (``drain`` and ``workflow`` in bench.run): N executions queued up front,
then W worker processes and one projector drain them.

It reports executions/s, from the first ExecutionStarted to the last ExecutionCompleted (the
events' own timestamps, so process start-up is excluded), and how far the projection trailed the
log while it ran.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import (
    PARTITIONS,
    TRANSCRIPT,
    Report,
    bench_role_env,
    bench_settings,
    fresh_runtime,
    rss_mib,
    transcript_request,
)
from engine.connection import as_str
from engine.log.events import ExecutionCompleted, ExecutionStarted
from engine.log.ids import new_id
from engine.runtime import Runtime
from tests.processes import Role

DEADLINE_S = 600  # a drain that takes longer is broken, not slow
POLL_S = 0.25

# How far the projection trailed is counted after the drain, not while it runs: each poll keeps
# the partitions' checkpoints and tails (two small pipelines), and the entries between them are
# counted from the log that _span reads anyway. Counting them live meant reading them (a stream
# has no range count): up to 50,000 per partition every 2 s, a third of a core for the harness and
# as much for Redis at a 150k-entry lag, taken from the processes being measured, and more so
# since they run at a lower CPU priority than the harness (CLIPSTREAM_BACKGROUND_NICE).
Position = dict[int, str]  # partition -> a stream entry id


@dataclass(frozen=True)
class Drained:
    """What one drain measured."""

    per_s: float  # executions/s, first ExecutionStarted -> last ExecutionCompleted
    e2e_per_s: float  # executions/s, first ExecutionStarted -> every view current
    events_per_execution: float  # partition-log entries per execution
    redis_bytes_per_execution: float  # Redis used_memory grown per execution, views included


async def bench_drain(
    report: Report,
    url: str,
    n: int,
    workers: int,
    logs: Path,
    *,
    tools: tuple[str, ...] = TRANSCRIPT,
    latency_ms: int = 0,
    label: str = "one-step transcripts/s",
    projectors: int = 1,
    detail: bool = True,
) -> Drained:
    """Queue ``n`` executions of ``tools`` in the emptied Redis at ``url``, drain them with
    ``workers`` worker processes (providers answering after ``latency_ms``) and ``projectors``
    projector processes, and add the throughput and the projection's lag to ``report`` (without
    ``detail``: one row of both rates, for a repeated run)."""
    runtime = await fresh_runtime(bench_settings(url))
    try:
        memory_before = await _used_memory(runtime)
        await _preload(runtime, n, tools)
        procs = _start_roles(url, workers, latency_ms, logs, projectors)
        try:
            positions, views_current = await _wait_drained(runtime)
            memory_after = await _used_memory(runtime)
            for proc in procs:
                key = f"{proc.args[0]} (drain, {workers} workers)"
                report.rss[key] = max(report.rss.get(key, 0.0), rss_mib(proc.proc.pid))
        finally:
            for proc in procs:
                proc.terminate()
        first_start, last_done, completed, events, ids = await _span(runtime)
        max_behind = _most_behind(positions, ids)
        secs = (last_done - first_start) / 1000
        e2e_secs = views_current - first_start / 1000
        drained = Drained(
            per_s=completed / secs,
            e2e_per_s=completed / e2e_secs,
            events_per_execution=events / max(1, completed),
            redis_bytes_per_execution=(memory_after - memory_before) / max(1, completed),
        )
        lag_ms = views_current * 1000 - last_done
        if not detail:
            report.add(
                f"drain, again: {label}, {workers}w, {projectors}p",
                f"{drained.per_s:,.0f}",
                f"drained/s; {drained.e2e_per_s:,.0f} executions/s end to end (all views current "
                f"{lag_ms / 1000:.1f}s after the last completion)",
            )
            return drained
        report.add(
            f"drain: {label}, {workers} worker process(es)",
            f"{drained.per_s:,.0f}",
            f"{completed:,} of {n:,} executions done in {secs:.1f}s",
        )
        report.add(
            f"projection: max entries behind the log ({label}, {workers}w, {projectors}p)",
            f"{max_behind:,}",
            f"all views current {lag_ms / 1000:.1f}s after the last completion (±0.25s): "
            f"{drained.e2e_per_s:,.0f} executions/s end to end",
        )
        report.add(
            f"events per execution ({label})",
            f"{drained.events_per_execution:.2f}",
            f"{events:,} log entries for {completed:,} executions",
        )
        report.add(
            f"redis bytes per execution ({label}, {workers}w)",
            f"{drained.redis_bytes_per_execution:,.0f}",
            "used_memory once every view is current, less before the preload",
        )
        return drained
    finally:
        await runtime.close()


async def _preload(
    runtime: Runtime, n: int, tools: tuple[str, ...] = TRANSCRIPT, owners: int = 64
) -> None:
    """Queue ``n`` executions of ``tools`` spread over ``owners`` accounts, 500 at a time."""
    store = runtime.store
    accounts = [new_id("acc") for _ in range(owners)]
    for acc in accounts:
        await store.redis.set(store.keys.balance(acc), 10**15)
    for start in range(0, n, 500):
        batch = []
        for i in range(start, min(n, start + 500)):
            owner = accounts[i % owners]
            request = transcript_request(owner, store.keys.partition(owner), i, tools)
            batch.append(store.admission.request(request))
        await asyncio.gather(*batch)


def _start_roles(
    url: str, workers: int, latency_ms: int, logs: Path, projectors: int = 1
) -> list[Role]:
    """``workers`` worker processes and ``projectors`` projectors, as they are deployed."""
    env = bench_role_env(
        url,
        CLIPSTREAM_PARTITIONS=str(PARTITIONS),
        CLIPSTREAM_SIM_LATENCY_MS=str(latency_ms),
        CLIPSTREAM_WORKER_CONCURRENCY="200",
        CLIPSTREAM_LEASE_MS="15000",
        CLIPSTREAM_HEARTBEAT_MS="3000",
        CLIPSTREAM_CLAIM_INTERVAL_MS="5000",
    )
    procs = [Role(["worker"], env, logs / f"drain{workers}-w{i}.log") for i in range(workers)]
    procs += [
        Role(["projector"], env, logs / f"drain{workers}-proj{i}.log") for i in range(projectors)
    ]
    return procs


async def _wait_drained(runtime: Runtime) -> tuple[list[tuple[Position, Position]], float]:
    """Poll until every execution has ended and every view is current: (the checkpoints and the
    log tails of every poll, the wall-clock time it was found current)."""
    positions: list[tuple[Position, Position]] = []
    deadline = time.monotonic() + DEADLINE_S
    while True:
        await asyncio.sleep(POLL_S)
        tails = await _log_tails(runtime)
        ckpts = await _checkpoints(runtime)
        positions.append((ckpts, tails))
        if await _all_acked(runtime) and tails == ckpts:
            return positions, time.time()
        if time.monotonic() > deadline:
            raise TimeoutError(f"drain did not finish within {DEADLINE_S} s")


async def _log_tails(runtime: Runtime) -> dict[int, str]:
    store = runtime.store
    pipe = store.redis.pipeline(transaction=False)
    for p in store.partitions:
        pipe.xinfo_stream(store.keys.log(p))
    infos = await pipe.execute()
    return {
        p: as_str(info["last-generated-id"])
        for p, info in zip(store.partitions, infos, strict=True)
    }


async def _checkpoints(runtime: Runtime) -> dict[int, str]:
    store = runtime.store
    version = int(await store.redis.hget(store.keys.meta, "projection_version") or 1)
    pipe = store.redis.pipeline(transaction=False)
    for p in store.partitions:
        pipe.get(f"{store.keys.view_ns(p, version)}:ckpt")
    return {
        p: as_str(v) if v else "0-0"
        for p, v in zip(store.partitions, await pipe.execute(), strict=True)
    }


def _most_behind(
    positions: list[tuple[Position, Position]], ids: dict[int, list[tuple[int, int]]]
) -> int:
    """The most log entries the projection was behind at any poll: for each poll, the entries
    of every partition after its checkpoint and up to its tail then, counted in ``ids`` (each
    partition's entry ids in order, as :func:`_span` read them once the drain was over)."""

    def index(partition: int, entry_id: str) -> int:
        return bisect.bisect_right(ids.get(partition, []), _id_key(entry_id))

    return max(
        (
            sum(index(p, tails[p]) - index(p, ckpt) for p, ckpt in ckpts.items() if p in tails)
            for ckpts, tails in positions
        ),
        default=0,
    )


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def _all_acked(runtime: Runtime) -> bool:
    """True when every queued execution has ended (no owner left in a ring, no lease pending) and
    every consumer group there is has read and acknowledged its entries."""
    store = runtime.store
    for p in store.partitions:
        if await store.redis.llen(store.keys.ring(p)):
            return False
        for stream in (store.keys.work(p), store.keys.log(p)):
            for group in await store.redis.xinfo_groups(stream):
                if int(group["pending"]) or group.get("lag") not in (0, None):
                    return False
    return True


async def _used_memory(runtime: Runtime) -> int:
    """What Redis holds right now (``INFO memory``'s used_memory), in bytes."""
    info = await runtime.redis.info("memory")
    return int(info["used_memory"])


async def _span(
    runtime: Runtime,
) -> tuple[int, int, int, int, dict[int, list[tuple[int, int]]]]:
    """(first ExecutionStarted.at, last ExecutionCompleted.at, completions, log entries, each
    partition's entry ids in order) over all logs."""
    store = runtime.store
    first, last, completed, events = 2**62, 0, 0, 0
    ids: dict[int, list[tuple[int, int]]] = {}
    for p in store.partitions:
        after = "0-0"
        ids[p] = []
        while True:
            entries = await store.log.read_log(p, after, 10_000)
            if not entries:
                break
            after = entries[-1].entry_id
            events += len(entries)
            ids[p] += (_id_key(e.entry_id) for e in entries)
            for e in entries:
                if isinstance(e.event, ExecutionStarted):
                    first = min(first, e.event.at)
                elif isinstance(e.event, ExecutionCompleted):
                    last = max(last, e.event.at)
                    completed += 1
    return first, last, completed, events, ids
