"""The realtime feed: one stream per owner that the projector appends to, and the hub that tails it
for the API's subscribers.

    {prefix}{{pN}}:feed:{owner}   stream: one entry per event folded for the owner, MAXLEN ~ N
        fields: execution_id, seq, type, summary (JSON: the execution after that event)

The key sits under the owner's partition hash tag, outside any projection namespace (the feed is
live-only and outlives a version switch), so the projector appends to it in the same Lua call that
writes the views and moves the checkpoint: a batch's feed entries exist exactly when its
checkpoint moved, and a retried batch never appends twice. Replays write no feed entries. The entry
id is the subscriber's cursor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from engine.keys import Keys
from engine.settings import micro_to_coins
from engine.store import Entry
from projections.fold import FoldGap, apply
from projections.views import ExecutionView

# Entries kept per owner (approximately: XADD MAXLEN ~ trims whole radix-tree nodes).
FEED_MAXLEN = 10_000


def feed_key(keys: Keys, partition: int, owner: str) -> str:
    """The feed stream of ``owner``, whose partition is ``partition``."""
    return f"{keys.tag(partition)}:feed:{owner}"


def owner_feed_key(keys: Keys, owner: str) -> str:
    """The feed stream of ``owner`` (its partition computed)."""
    return feed_key(keys, keys.partition(owner), owner)


def feed_summary(view: ExecutionView) -> dict[str, Any]:
    """The compact execution a feed entry carries: enough for a live list and a progress bar."""
    error = view.error
    return {
        "execution_id": view.execution_id,
        "kind": view.kind,
        "status": view.status,
        "current_step": view.current_step,
        "steps_done": sum(1 for s in view.steps if s.status == "done"),
        "steps_total": len(view.steps),
        "cost_coins": micro_to_coins(view.cost),
        "error": None if error is None else {"code": error.code, "message": error.message},
        "cancel_requested": view.cancel_requested,
        "created_at": view.created_at,
        "updated_at": view.updated_at,
        "finished_at": view.finished_at,
    }


@dataclass(frozen=True, slots=True)
class FeedRecord:
    """One feed entry to append: an event of ``owner``'s execution and the execution after it."""

    owner: str
    execution_id: str
    seq: int
    type: str
    summary: bytes  # JSON of :func:`feed_summary`


def event_type(event: Any) -> str:
    """An event's tag (``StepStarted`` …)."""
    return str(type(event).__struct_config__.tag)


def feed_records(
    before: Mapping[str, ExecutionView],
    entries: Sequence[Entry],
    after: Mapping[str, ExecutionView],
) -> list[FeedRecord]:
    """The feed entries of a folded batch: one per event that moved a view, in log order.

    ``before`` are the views as loaded, ``after`` as they will be written. Each event is folded
    again from ``before`` so every entry carries the execution as it was right after that event;
    duplicates (seq already applied) and events the batch could not apply are left out. An
    execution repaired from its own stream (a gap) reports its repaired view for each event.
    """
    current: dict[str, ExecutionView] = {}
    emitted: dict[str, int] = {}  # execution id -> the last seq given an entry
    repaired: set[str] = set()
    out: list[FeedRecord] = []
    for entry in entries:
        event = entry.event
        if event is None:
            continue
        xid = event.execution_id
        final = after.get(xid)
        if final is None or event.seq > final.seq:
            continue  # not applied: an unrepaired gap
        last = emitted.get(xid)
        if last is None:
            loaded = before.get(xid)
            last = loaded.seq if loaded is not None else 0
        if event.seq <= last:
            continue  # a duplicate delivery: the view did not move
        view = final
        if xid not in repaired:
            try:
                view = apply(current.get(xid, before.get(xid)), event)
            except FoldGap:
                repaired.add(xid)  # folded from its stream: only the repaired view is known
        current[xid] = view
        emitted[xid] = event.seq
        summary = orjson.dumps(feed_summary(view))
        out.append(FeedRecord(final.owner, xid, event.seq, event_type(event), summary))
    return out
