"""Folding partition logs into a new projection namespace (what ``projections.replay.rebuild``
does per partition), here or split across child processes.

One partition: its log read from the start (the archive's segments, then the hot tail:
engine.archive.reader.event_pages, each page decoded in one call), folded in memory with the live
projector's code (``projections.batch``), written at the end with big pipelined commands
(``projections.bulk``); Python's cycle collector is paused meanwhile (:func:`cyclic_gc_paused`).

Across processes: the partitions go to N children in shares of about equal entries; each child
opens its own runtime (its own connection and archive reader: the fold is CPU-bound, one core per
child) and rebuilds its partitions into the version the parent chose. The children report their
progress and their counts on a queue; a child that fails or dies fails the rebuild (its partitions
have no checkpoint, so the namespace is incomplete and the next rebuild drops it).
"""

from __future__ import annotations

import gc
import multiprocessing
import queue
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from typing import Any

import anyio

from engine.archive import reader
from engine.errors import StoreError
from engine.runtime import Runtime
from engine.settings import Settings
from projections import bulk
from projections.batch import fold_events, repair
from projections.namespace import Namespace
from projections.views import ExecutionView

PAGE = 10_000  # log entries per read
_POLL_S = 0.05

Progress = Callable[[int, int], None]


@dataclass(slots=True)
class Work:
    """What a rebuild has done so far (summed over its processes)."""

    version: int
    total: int
    done: int = 0  # log entries read
    events: int = 0
    executions: int = 0
    skipped: int = 0
    gaps: int = 0

    def add(self, other: Work) -> None:
        self.done += other.done
        self.events += other.events
        self.executions += other.executions
        self.skipped += other.skipped
        self.gaps += other.gaps


def can_split(settings: Settings) -> bool:
    """Whether child processes can rebuild partitions: they reach the same Redis and archive."""
    archive = settings.archive_url or ""
    return settings.redis_url is not None and not archive.startswith("memory:")


def shares(sizes: dict[int, int], processes: int) -> list[list[int]]:
    """The partitions in ``processes`` groups of about equal entries (biggest first, each to the
    lightest group); empty groups left out."""
    groups: list[tuple[int, list[int]]] = [(0, []) for _ in range(processes)]
    for p in sorted(sizes, key=lambda q: -sizes[q]):
        groups.sort(key=lambda g: g[0])
        weight, members = groups[0]
        groups[0] = (weight + sizes[p], [*members, p])
    return [sorted(members) for _, members in groups if members]


async def rebuild_partition(
    runtime: Runtime, version: int, partition: int, work: Work, progress: Progress | None = None
) -> None:
    """Fold ``partition``'s log (the archive, then the hot tail) and write its namespace of
    ``version`` (projections.bulk), adding what it did to ``work``."""
    store = runtime.store
    views: dict[str, ExecutionView] = {}
    after = "0-0"
    skipped = 0
    with cyclic_gc_paused():
        async for page in reader.event_pages(store, runtime.archive, partition, "0-0", PAGE):
            folded = fold_events(views, page.events)
            await repair(store, views, folded)
            work.events += folded.events
            skipped += folded.skipped
            work.gaps += folded.gaps
            after = page.last_id
            work.done += len(page.events)
            if progress is not None:
                progress(work.done, max(work.total, work.done))
        ns = Namespace(store.keys, partition, version)
        await bulk.write_namespace(runtime.redis, ns, views.values(), after, skipped)
        work.executions += len(views)
        # Freed now, by their reference counts: once back, the collector would walk them all.
        views.clear()
    work.skipped += skipped


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Python's cycle collector off while a partition is folded, back as it was after.

    A fold keeps every view of the partition alive until it is written, hundreds of thousands of
    objects that the collector would walk again and again as they grow, though no cycle is among
    them (views and events are trees of immutable structs, freed by their reference counts): about
    a quarter of a rebuild's CPU time (bench/results/2026-12-05-archive-replay.md)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def in_processes(
    settings: Settings, work: Work, groups: Sequence[Sequence[int]], progress: Progress | None
) -> None:
    """Rebuild each group of partitions in a child process into ``work.version``; their counts
    are added to ``work``. StoreError when a child fails or dies."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with an event loop
    updates: Any = context.Queue()
    children = [
        context.Process(
            target=_child,
            args=(settings, work.version, list(group), i, updates),
            name=f"clipstream-replay-{i}",
            daemon=True,
        )
        for i, group in enumerate(groups)
    ]
    for child in children:
        child.start()
    read = [0] * len(children)
    finished: dict[int, Work] = {}
    try:
        while len(finished) < len(children):
            try:
                kind, i, payload = updates.get_nowait()
            except queue.Empty:
                for i, child in enumerate(children):
                    if i not in finished and child.exitcode is not None and updates.empty():
                        raise StoreError(
                            f"replay process {i} died (exit code {child.exitcode})"
                        ) from None
                await anyio.sleep(_POLL_S)
                continue
            if kind == "error":
                raise StoreError(f"replay process {i} failed: {payload}")
            if kind == "done":
                finished[i] = Work(*payload)
                read[i] = finished[i].done
            else:
                read[i] = payload
            if progress is not None:
                done = sum(read)
                progress(done, max(work.total, done))
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
            child.join(timeout=10)
        updates.close()
    for result in finished.values():
        work.add(result)


def _child(
    settings: Settings, version: int, partitions: list[int], index: int, updates: Any
) -> None:
    """A child process: rebuild ``partitions``, then put ("done", index, counts) on ``updates``
    (("progress", index, entries read) along the way, ("error", index, text) on failure)."""
    try:
        work = anyio.run(_rebuild_group, settings, version, partitions, index, updates)
        updates.put(("done", index, astuple(work)))
    except BaseException as exc:
        updates.put(("error", index, f"{type(exc).__name__}: {exc}"))
        raise


async def _rebuild_group(
    settings: Settings, version: int, partitions: list[int], index: int, updates: Any
) -> Work:
    runtime = await Runtime.open(settings)
    try:
        work = Work(version=version, total=0)
        for p in partitions:
            await rebuild_partition(
                runtime, version, p, work, lambda done, _: updates.put(("progress", index, done))
            )
        return work
    finally:
        await runtime.close()
