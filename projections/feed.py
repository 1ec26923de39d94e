"""The realtime feed's stream: one per owner, appended to by the projector, read by the API's hub
(``api.realtime.hub``).

    {prefix}{{pN}}:feed:{owner}   stream: one entry per execution per folded batch, MAXLEN ~ N
        fields: execution_id, seq, type, summary, v

An entry holds the events of one execution that one batch folded, in seq order: ``seq`` and
``type`` list them (comma-separated), ``summary`` is a JSON array of the execution right after
each. ``v`` says what they are:

    v = "3"    the events of a batch grouped (this version); each summary a :class:`FeedRow`: a
               :class:`projections.views.FeedSummary` (view data: times in ms, money in
               micro-coins) as the array of its values, which the API renders (``api.render``)
               once per event.
    v = "2"    one event per entry: ``seq`` and ``type`` one each, ``summary`` one FeedSummary.
    no v       one event per entry, written before the API rendered feed entries: the summary is
               the client JSON itself (ISO-8601 times, coins), sent on as it was stored.

A batch usually holds several events of an execution (its step starting, ending, the execution
ending): a one-step execution folded in one batch costs the commit one XADD where it cost five, and
the feed one entry where it kept five.

The cursor a subscriber resumes from is an entry id: the last event of an entry carries the
entry's own id, the others the id just before it (:func:`before`), so a client that stops halfway
through an entry is given the whole entry again — a duplicate, named by execution id and seq, never
a gap (DESIGN: "clients may see a duplicate"). :func:`position` orders the events of the feed for
deduplication: the entry id, then the event's place in its entry.

Every commit that appends feed entries also appends one entry to the partition's live stream,

    {prefix}{{pN}}:feedlive       stream, MAXLEN ~ LIVE_MAXLEN; fields: feeds (the feed keys the
                                  commit appended to, space-separated)

which is what the API's hubs block on: one key per partition whatever the number of owners, so a
hub reads an owner's feed only when it has news (api.realtime.hub). It is a notification, not the
data: the owner's feed and its entry ids stay the truth and the cursor.

The key sits under the owner's partition hash tag, outside any projection namespace (the feed is
live-only and outlives a version switch), so the projector appends to it in the same Lua call that
writes the views and moves the checkpoint: a batch's feed entries exist exactly when its
checkpoint moved, and a retried batch never appends twice. Replays write no feed entries.
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
# The ``v`` of the entries this version writes, and of the single-event ones before (see the
# module docstring).
SUMMARY_VERSION = b"3"
_SINGLE_VERSION = b"2"
# The place of an entry's last event (:func:`position`): after every other place in the entry.
THROUGH = 1 << 62
# The largest sequence part of a stream entry id.
_MAX_SEQ = (1 << 64) - 1

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


class FeedRow(FeedSummary, frozen=True, kw_only=True, array_like=True):
    """A :class:`FeedSummary` as entries of this version store it: its fields' values in their
    order, without their names (under half the bytes). Fields may be added at the end with
    defaults, never reordered, renamed or removed."""


_group_decoder = msgspec.json.Decoder(list[FeedRow])


def feed_summary(view: ExecutionView, cls: type[FeedSummary] = FeedSummary) -> FeedSummary:
    """The compact execution a feed entry carries: enough for a live list and a progress bar
    (``cls``: :class:`FeedRow` for an entry of this version)."""
    return cls(
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
    summary: FeedSummary  # :func:`feed_summary` of the execution after the event


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
        summary = feed_summary(view, FeedRow)
        out.append(FeedRecord(final.owner, xid, event.seq, event_type(event), summary))
    return out


@dataclass(frozen=True, slots=True)
class FeedGroup:
    """One feed entry to append: the events of one execution a batch folded, in seq order, as the
    entry stores them (see the module docstring)."""

    owner: str
    execution_id: str
    seqs: str  # comma-separated
    types: str  # comma-separated
    summaries: bytes  # a JSON array, one summary per event


def feed_groups(records: Sequence[FeedRecord]) -> list[FeedGroup]:
    """A batch's feed records as the entries it appends: one per execution, in the order of each
    execution's first event in the batch (an execution's own events keep their order)."""
    by_execution: dict[str, list[FeedRecord]] = {}
    for record in records:
        group = by_execution.get(record.execution_id)
        if group is None:
            by_execution[record.execution_id] = [record]
        else:
            group.append(record)
    encode = _encoder.encode
    return [
        FeedGroup(
            group[0].owner,
            xid,
            ",".join([str(r.seq) for r in group]),
            ",".join([r.type for r in group]),
            encode([r.summary for r in group]),
        )
        for xid, group in by_execution.items()
    ]


@dataclass(frozen=True, slots=True)
class FeedEntry:
    """One event read back from a feed stream. ``cursor`` is what a client resumes from after it,
    ``order`` its place in the feed (:func:`position`). ``summary`` is a :class:`FeedSummary`, or
    for an entry written before summaries were view data, the client JSON it stored (a dict)."""

    cursor: str
    execution_id: str
    seq: int
    type: str
    summary: FeedSummary | dict[str, Any]
    order: tuple[int, int, int]


def position(entry_id: str, place: int = THROUGH) -> tuple[int, int, int]:
    """An event's place in the feed, comparable: its entry id, then its place in the entry
    (``THROUGH``, the default: the entry's last event, so a cursor's position is past its whole
    entry)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0), place


def before(entry_id: str) -> str:
    """The stream id just before ``entry_id``: the cursor after which a read starts at it."""
    ms, _, seq = entry_id.partition("-")
    if int(seq or 0) > 0:
        return f"{ms}-{int(seq) - 1}"
    return f"{int(ms) - 1}-{_MAX_SEQ}"


def read_entries(entry_id: str, fields: Mapping[bytes, bytes]) -> list[FeedEntry]:
    """The events of a feed stream entry (its id and fields, as XRANGE/XREAD give them).

    Raises msgspec/orjson decode errors for a summary that is not JSON of its version, and
    ValueError for an entry whose lists do not match."""
    version = fields.get(b"v")
    xid = fields[b"execution_id"].decode()
    raw = fields[b"summary"]
    if version != SUMMARY_VERSION:
        single = version == _SINGLE_VERSION
        summary: FeedSummary | dict[str, Any] = (
            _decoder.decode(raw) if single else orjson.loads(raw)
        )
        seq, kind = int(fields[b"seq"]), fields[b"type"].decode()
        return [FeedEntry(entry_id, xid, seq, kind, summary, position(entry_id))]
    seqs = fields[b"seq"].decode().split(",")
    types = fields[b"type"].decode().split(",")
    summaries = _group_decoder.decode(raw)
    if not seqs or not len(seqs) == len(types) == len(summaries):
        raise ValueError(
            f"feed entry {entry_id}: {len(seqs)} seqs, {len(types)} types, "
            f"{len(summaries)} summaries"
        )
    last, earlier = len(seqs) - 1, before(entry_id)
    return [
        FeedEntry(
            entry_id if k == last else earlier,
            xid,
            int(seq),
            kind,
            summary,
            position(entry_id, THROUGH if k == last else k),
        )
        for k, (seq, kind, summary) in enumerate(zip(seqs, types, summaries, strict=True))
    ]
