"""Rebuild every projection from the logs into a new version beside the live one, compare the two,
switch, and drop old versions. No printing here: the CLI draws the progress bar and the report.

A rebuild reads each partition log from the start in pages of 10,000 (its archived segments, then
the hot tail in Redis: engine.archive.reader.log_pages), folds in memory with the same code as the
live projector (``projections.batch``), and writes the views, indexes and checkpoint of version
``current + 1`` in big pipelined commands (``projections.bulk``), the checkpoint last. The
partitions can be split among child processes (``processes``, ``projections.rebuild``). After
``switch`` the live projectors continue from the new namespace's checkpoints, so events appended
during the rebuild are folded there too. Leftovers of an unfinished rebuild are dropped first.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from engine.archive.catalog import latest_manifest
from engine.connection import as_str
from engine.errors import InvalidRequest
from engine.runtime import Runtime
from projections.namespace import (
    DEFAULT_VERSION,
    Namespace,
    current_version,
    set_version,
)
from projections.rebuild import Progress, Work, can_split, in_processes, rebuild_partition, shares
from projections.views import decode_view

WRITE_BATCH = 500  # views compared, keys deleted, per round trip


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What a rebuild did."""

    version: int
    previous_version: int
    partitions: int
    events: int
    executions: int
    skipped: int
    gaps: int
    seconds: float
    processes: int = 1

    def describe(self) -> str:
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        return (
            f"rebuilt projection version {self.version} (live: {self.previous_version}) from "
            f"{self.partitions} partitions: {self.events:,} events, {self.executions:,} "
            f"executions, {self.skipped} undecodable entries skipped, {self.gaps} gaps, "
            f"in {self.seconds:.1f}s ({rate:,.0f} events/s, {self.processes} process"
            f"{'es' if self.processes > 1 else ''})"
        )


@dataclass(frozen=True, slots=True)
class ParityReport:
    """How projection versions ``a`` and ``b`` differ; empty lists mean identical views."""

    version_a: int
    version_b: int
    count_a: int
    count_b: int
    missing_in_a: list[str] = field(default_factory=list)
    missing_in_b: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.missing_in_a or self.missing_in_b or self.differing)

    def describe(self, show: int = 10) -> str:
        head = (
            f"parity v{self.version_a} ({self.count_a:,} views) vs v{self.version_b} "
            f"({self.count_b:,} views): "
        )
        if self.identical:
            return head + "identical"
        lines = [
            head + f"{len(self.missing_in_a)} missing in v{self.version_a}, "
            f"{len(self.missing_in_b)} missing in v{self.version_b}, "
            f"{len(self.differing)} differ"
        ]
        for label, ids in (
            (f"missing in v{self.version_a}", self.missing_in_a),
            (f"missing in v{self.version_b}", self.missing_in_b),
            ("differ", self.differing),
        ):
            for xid in ids[:show]:
                lines.append(f"  {label}: {xid}")
            if len(ids) > show:
                lines.append(f"  … and {len(ids) - show} more {label}")
        return "\n".join(lines)


async def rebuild(
    runtime: Runtime,
    *,
    progress: Progress | None = None,
    partitions: Sequence[int] | None = None,
    processes: int = 1,
) -> RebuildReport:
    """Fold every partition log from the start into version ``current + 1`` (not switched).

    With ``processes`` > 1 the partitions are split among that many child processes (each its own
    connection, its own core), the biggest logs first so the shares come out even; that needs a
    Redis the children can reach (not the embedded store) and an archive they can read (not one in
    memory), and otherwise the rebuild runs here."""
    store = runtime.store
    started = time.perf_counter()
    previous = await current_version(runtime.redis, store.keys)
    version = previous + 1
    await drop(runtime, version)
    chosen = list(partitions if partitions is not None else store.partitions)
    sizes = {p: await store.log.log_length(p) + await _archived(runtime, p) for p in chosen}
    total = sum(sizes.values())
    if progress is not None:
        progress(0, total)
    work = Work(version=version, total=total)
    groups = shares(sizes, processes) if can_split(runtime.settings) else [chosen]
    if len(groups) > 1:
        await in_processes(runtime.settings, work, groups, progress)
    else:
        for p in chosen:
            await rebuild_partition(runtime, version, p, work, progress)
    return RebuildReport(
        version=version,
        previous_version=previous,
        partitions=len(chosen),
        events=work.events,
        executions=work.executions,
        skipped=work.skipped,
        gaps=work.gaps,
        seconds=time.perf_counter() - started,
        processes=len(groups),
    )


async def _archived(runtime: Runtime, partition: int) -> int:
    """Entries of ``partition`` in the archive (for the progress bar; some may also be hot)."""
    if runtime.archive is None:
        return 0
    return (await latest_manifest(runtime.archive, partition)).entries


async def compare(runtime: Runtime, a: int, b: int) -> ParityReport:
    """Compare every view of versions ``a`` and ``b``, partition by partition."""
    store = runtime.store
    redis = runtime.redis
    count_a = count_b = 0
    missing_a: list[str] = []
    missing_b: list[str] = []
    differing: list[str] = []
    for p in store.partitions:
        ns_a, ns_b = Namespace(store.keys, p, a), Namespace(store.keys, p, b)
        # Both versions' keys of a partition share its hash slot: one round trip reads both.
        pipe = redis.pipeline(transaction=False)
        pipe.zrange(ns_a.all, 0, -1)
        pipe.zrange(ns_b.all, 0, -1)
        members_a, members_b = await pipe.execute()
        ids_a = {as_str(x) for x in members_a}
        ids_b = {as_str(x) for x in members_b}
        count_a += len(ids_a)
        count_b += len(ids_b)
        missing_a += sorted(ids_b - ids_a)
        missing_b += sorted(ids_a - ids_b)
        common = sorted(ids_a & ids_b)
        for start in range(0, len(common), WRITE_BATCH):
            chunk = common[start : start + WRITE_BATCH]
            keys = [ns_a.view(xid) for xid in chunk] + [ns_b.view(xid) for xid in chunk]
            raws: list[bytes | None] = await redis.mget(keys)
            raws_a, raws_b = raws[: len(chunk)], raws[len(chunk) :]
            for xid, raw_a, raw_b in zip(chunk, raws_a, raws_b, strict=True):
                if raw_a == raw_b:
                    continue
                if raw_a is None or raw_b is None or decode_view(raw_a) != decode_view(raw_b):
                    differing.append(xid)
    return ParityReport(
        version_a=a,
        version_b=b,
        count_a=count_a,
        count_b=count_b,
        missing_in_a=missing_a,
        missing_in_b=missing_b,
        differing=differing,
    )


async def switch(runtime: Runtime, version: int) -> None:
    """Make ``version`` the live projection; live projectors and queries follow at once."""
    store = runtime.store
    if version < 1:
        raise InvalidRequest(f"no projection version {version}")
    if version != DEFAULT_VERSION:
        found = 0
        for p in store.partitions:
            found += int(await runtime.redis.exists(Namespace(store.keys, p, version).ckpt))
        if not found:
            raise InvalidRequest(f"projection version {version} has not been built")
    await set_version(runtime.redis, store.keys, version)


async def drop(runtime: Runtime, version: int) -> int:
    """Delete every key of projection ``version`` (never the live one); the number deleted."""
    store = runtime.store
    if version == await current_version(runtime.redis, store.keys):
        raise InvalidRequest(f"projection version {version} is live; switch away first")
    prefix = store.keys.prefix
    owned = re.compile(rf"^{re.escape(prefix)}\{{p\d+\}}:v{version}:")
    deleted = 0
    pending: list[str] = []
    async for raw in runtime.redis.scan_iter(match=f"{prefix}{{p*}}:v{version}:*", count=1000):
        key = as_str(raw)
        if owned.match(key):
            pending.append(key)
        if len(pending) >= WRITE_BATCH:
            deleted += await _delete(runtime, pending)
            pending = []
    deleted += await _delete(runtime, pending)
    return deleted


async def _delete(runtime: Runtime, keys: list[str]) -> int:
    if not keys:
        return 0
    pipe = runtime.redis.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    return sum(int(n) for n in await pipe.execute())
