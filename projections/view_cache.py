"""The views a projector committed last, kept in its memory while it holds their partitions.

A running execution's events reach the projector in several batches (requested, started, each step,
ended); without this, every batch reads its views back (a GET and a decode each) although the
projector wrote them itself a moment before. The cache holds what the projector's own commits
stored, so a view taken from it equals what a GET and decode_view would give.

That holds only while nobody else writes the partition's views, which the lease and the
checkpoint's compare-and-set guarantee between two commits of the same holder. So a partition is
forgotten whenever that may have been broken: its lease lost or handed over, a commit that found
the checkpoint moved, a batch that failed or was cancelled (its commit may or may not have landed),
a switch to another projection version. Ended executions are not kept (the archiver's retention
rewrites and evicts ended views; the one event that may follow an end, an operator's
ExecutionRetried, finds its view read back from Redis); nor are more than
``capacity`` views (``CLIPSTREAM_PROJECTOR_VIEWS``), the least recently used going first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from projections.views import ExecutionView, is_active


class ViewCache:
    """Views by execution id, each under the partition it was committed in."""

    __slots__ = ("_capacity", "_views")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._views: OrderedDict[str, tuple[int, ExecutionView]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._views)

    def take(self, partition: int, execution_ids: Sequence[str]) -> dict[str, ExecutionView]:
        """The cached views among ``execution_ids`` (of ``partition``), now the most recent."""
        found: dict[str, ExecutionView] = {}
        views = self._views
        for xid in execution_ids:
            held = views.get(xid)
            if held is not None and held[0] == partition:
                views.move_to_end(xid)
                found[xid] = held[1]
        return found

    def keep(self, partition: int, views: Iterable[ExecutionView]) -> None:
        """Remember ``views`` as just committed in ``partition``: the active ones are kept, the
        ended ones dropped, and the least recently used go beyond the capacity."""
        cached = self._views
        for view in views:
            xid = view.execution_id
            if is_active(view):
                cached[xid] = (partition, view)
                cached.move_to_end(xid)
            else:
                cached.pop(xid, None)
        while len(cached) > self._capacity:
            cached.popitem(last=False)

    def forget(self, partition: int) -> None:
        """Drop every view of ``partition``: someone else may have written them."""
        stale = [xid for xid, (p, _) in self._views.items() if p == partition]
        for xid in stale:
            del self._views[xid]

    def clear(self) -> None:
        self._views.clear()
