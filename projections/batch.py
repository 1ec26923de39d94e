"""Folding a batch of partition-log entries into a set of views: shared by the live projector and
by replay, so both build views the same way.

An undecodable entry is counted and skipped. An event whose predecessors are not in the views
(a gap: the log was trimmed, or an entry before it was undecodable) is repaired from the
execution's own stream, which holds every event of the execution: the events up to the highest
seq the batch carried are folded from there. What cannot be repaired is counted as a gap.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from engine.errors import StoreError
from engine.log.entries import Entry
from engine.log.events import AnyEvent
from engine.log.ids import is_id
from engine.log.store import EventStore
from projections.fold import FoldGap, apply
from projections.views import ExecutionView


@dataclass(slots=True)
class Folded:
    """What folding a batch did."""

    changed: set[str] = field(default_factory=set)
    events: int = 0
    skipped: int = 0  # undecodable entries
    gaps: int = 0  # events that could not be applied, even from the execution stream
    broken: dict[str, int] = field(default_factory=dict)  # execution id -> highest seq seen


def fold_entries(
    views: dict[str, ExecutionView],
    entries: Sequence[Entry],
    trail: list[ExecutionView | None] | None = None,
) -> Folded:
    """Apply ``entries`` to ``views`` in log order (``views`` is updated in place).

    Executions that hit a gap are left in ``broken`` for :func:`repair`; their later events in
    the batch are not applied here, since they would only hit the same gap. ``trail``, when
    given, gets one item per entry: the view right after its event was applied, else None (what
    projections.feed.feed_records reads instead of folding the batch a second time).
    """
    return fold_events(views, [entry.event for entry in entries], trail)


def fold_events(
    views: dict[str, ExecutionView],
    events: Iterable[AnyEvent | None],
    trail: list[ExecutionView | None] | None = None,
) -> Folded:
    """:func:`fold_entries` for events already taken out of their entries (None: undecodable)."""
    if trail is not None:
        return _fold_trailed(views, events, trail)
    out = Folded()
    broken = out.broken
    for event in events:
        if event is None:
            out.skipped += 1  # undecodable
            continue
        xid = event.execution_id
        before = views.get(xid)
        # Only an id without a view yet is checked: a view is only ever keyed by a good one.
        if before is None and not is_id(xid, "exc"):
            out.skipped += 1  # naming no execution we could key
            continue
        out.events += 1
        if xid in broken:
            broken[xid] = max(broken[xid], event.seq)
            continue
        try:
            after = apply(before, event)
        except FoldGap:
            broken[xid] = event.seq
            continue
        if after is not before:
            views[xid] = after
            out.changed.add(xid)
    return out


def _fold_trailed(
    views: dict[str, ExecutionView],
    events: Iterable[AnyEvent | None],
    trail: list[ExecutionView | None],
) -> Folded:
    """:func:`fold_events`, recording each event's view in ``trail`` as it goes."""
    out = Folded()
    broken = out.broken
    for event in events:
        if event is None:
            out.skipped += 1  # undecodable
            trail.append(None)
            continue
        xid = event.execution_id
        before = views.get(xid)
        if before is None and not is_id(xid, "exc"):
            out.skipped += 1  # naming no execution we could key
            trail.append(None)
            continue
        out.events += 1
        if xid in broken:
            broken[xid] = max(broken[xid], event.seq)
            trail.append(None)
            continue
        try:
            after = apply(before, event)
        except FoldGap:
            broken[xid] = event.seq
            trail.append(None)
            continue
        trail.append(after)
        if after is not before:
            views[xid] = after
            out.changed.add(xid)
    return out


async def repair(store: EventStore, views: dict[str, ExecutionView], folded: Folded) -> None:
    """Fold the broken executions from their own streams, up to the seq the batch reached."""
    if not folded.broken:
        return
    try:
        histories = await store.log.histories(list(folded.broken))
    except StoreError:
        # An undecodable event in the stream itself: fall back to one execution at a time.
        histories = {}
        for xid in folded.broken:
            try:
                histories[xid] = await store.log.history(xid)
            except StoreError:
                histories[xid] = []
    for xid, upto in folded.broken.items():
        view = views.get(xid)
        try:
            for event in histories.get(xid, []):
                if event.seq > upto:
                    break
                view = apply(view, event)
        except FoldGap:
            pass
        if view is None or view.seq < upto:
            folded.gaps += 1
        if view is not None and view is not views.get(xid):
            views[xid] = view
            folded.changed.add(xid)
    folded.broken.clear()
