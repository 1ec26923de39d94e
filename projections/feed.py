"""The realtime feed's stream: one per owner, appended to by the projector, read by the API's hub
(``api.realtime.hub``).

    {prefix}{{pN}}:feed:{owner}   stream: one entry per event folded for the owner, MAXLEN ~ N
        fields: execution_id, seq, type, summary, v

``summary`` is JSON of the execution right after that event. ``v`` says what it is:

    v = "2"    a :class:`projections.views.FeedSummary` (view data: times in ms, money in
               micro-coins); the API renders it (``api.render``) once per event.
    no v       written before the API rendered feed entries: the summary is the client JSON
               itself (ISO-8601 times, coins), sent on as it was stored.

Every commit that appends feed entries also appends one entry to the partition's live stream,

    {prefix}{{pN}}:feedlive       stream, MAXLEN ~ LIVE_MAXLEN; fields: feeds (the feed keys the
                                  commit appended to, space-separated)

which is what the API's hubs block on: one key per partition whatever the number of owners, so a
hub reads an owner's feed only when it has news (api.realtime.hub). It is a notification, not the
data: the owner's feed and its entry ids stay the truth and the cursor.

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

import msgspec
import orjson

from engine.log.entries import Entry
from engine.log.keys import Keys
from projections.fold import FoldGap, apply
from projections.views import ExecutionView, FeedSummary, steps_done

# Entries kept per owner (approximately: XADD MAXLEN ~ trims whole radix-tree nodes).
FEED_MAXLEN = 10_000
# Notifications kept per partition (a hub further behind reads every subscribed feed anyway).
LIVE_MAXLEN = 10_000
# The ``v`` of the entries this version writes (see the module docstring).
SUMMARY_VERSION = b"2"

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(FeedSummary)


def feed_key(keys: Keys, partition: int, owner: str) -> str:
    """The feed stream of ``owner``, whose partition is ``partition`` (named by engine.log.keys,
    whose archiver keeps the feeds to their window)."""
    return keys.feed(partition, owner)


def owner_feed_key(keys: Keys, owner: str) -> str:
    """The feed stream of ``owner`` (its partition computed)."""
    return feed_key(keys, keys.partition(owner), owner)


def live_key(keys: Keys, partition: int) -> str:
    """The partition's live stream: which feeds each commit appended to."""
    return keys.feed_live(partition)


def live_feeds(fields: Mapping[bytes, bytes]) -> list[str]:
    """The feed keys a live stream entry names."""
    return fields.get(b"feeds", b"").decode().split()


def feed_summary(view: ExecutionView) -> FeedSummary:
    """The compact execution a feed entry carries: enough for a live list and a progress bar."""
    return FeedSummary(
        execution_id=view.execution_id,
        kind=view.kind,
        status=view.status,
        current_step=view.current_step,
        steps_done=steps_done(view.steps),
        steps_total=len(view.steps),
        cost=view.cost,
        error=view.error,
        cancel_requested=view.cancel_requested,
        created_at=view.created_at,
        updated_at=view.updated_at,
        finished_at=view.finished_at,
    )


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
    trail: Sequence[ExecutionView | None] | None = None,
) -> list[FeedRecord]:
    """The feed entries of a folded batch: one per event that moved a view, in log order.

    ``before`` are the views as loaded, ``after`` as they will be written. Each entry carries the
    execution as it was right after its event: ``trail[i]`` when the fold recorded it
    (projections.batch.fold_entries; None: not applied there), else the event folded again from
    ``before``. Duplicates (seq already applied) and events the batch could not apply are left
    out. An execution repaired from its own stream (a gap) reports its repaired view for each
    event.
    """
    current: dict[str, ExecutionView] = {}
    emitted: dict[str, int] = {}  # execution id -> the last seq given an entry
    repaired: set[str] = set()
    out: list[FeedRecord] = []
    for i, entry in enumerate(entries):
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
        if trail is not None:
            folded = trail[i]
            if folded is not None:  # None: repaired from its stream
                view = folded
        elif xid not in repaired:
            try:
                view = apply(current.get(xid, before.get(xid)), event)
            except FoldGap:
                repaired.add(xid)  # folded from its stream: only the repaired view is known
        current[xid] = view
        emitted[xid] = event.seq
        summary = _encoder.encode(feed_summary(view))
        out.append(FeedRecord(final.owner, xid, event.seq, event_type(event), summary))
    return out


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One entry read back from a feed stream. ``summary`` is a :class:`FeedSummary`, or for an
    entry written before summaries were view data, the client JSON it stored (a dict)."""

    cursor: str
    execution_id: str
    seq: int
    type: str
    summary: FeedSummary | dict[str, Any]


def read_entry(entry_id: str, fields: Mapping[bytes, bytes]) -> FeedEntry:
    """A feed stream entry (its id and fields, as XRANGE/XREAD give them) as a :class:`FeedEntry`.

    Raises msgspec/orjson decode errors for a summary that is not JSON of its version."""
    raw = fields[b"summary"]
    current = fields.get(b"v") == SUMMARY_VERSION
    summary: FeedSummary | dict[str, Any] = _decoder.decode(raw) if current else orjson.loads(raw)
    return FeedEntry(
        cursor=entry_id,
        execution_id=fields[b"execution_id"].decode(),
        seq=int(fields[b"seq"]),
        type=fields[b"type"].decode(),
        summary=summary,
    )
