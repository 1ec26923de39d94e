"""Reading history across the two tiers: the archive first, then the hot tail in Redis.

    log_pages          a partition log after a position (export, one execution's history)
    event_pages        the same, each page decoded at once: its events only (replay)
    ledger_rows        an account's whole ledger, oldest first (the audit)
    ledger_page        a page of an account's ledger, newest first (``GET /v1/me/ledger``)
    execution_history  one execution's events when its own stream has expired

Each reader copes with the archiver trimming while it reads: the archiver records how far it is
about to trim (``{pN}:archive`` ``trimmed_below``, ``ledger_through``) *before* trimming, and a
reader checks it again *after* reading the hot tail; when it moved past what the reader took from
the archive, the reader goes back to the archive for the rest.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec
from redis.exceptions import RedisError

from engine.archive import catalog
from engine.archive.manifest import Manifest
from engine.archive.segments import SegmentInfo, id_key, log_rows, parse_id, successor
from engine.archive.stores import ArchiveStore
from engine.connection import as_str
from engine.errors import ArchiveCorrupt, StoreUnavailable
from engine.log import codec
from engine.log.entries import Entry, RawEntry, entry_from_row
from engine.log.events import AnyEvent, ExecutionRequested, is_terminal
from engine.log.ids import execution_partition, id_time_ms
from engine.log.store import EventStore

PAGE = 10_000
# How far from the time in its id an execution's ExecutionRequested may be in the log (the API
# host's clock against Redis's, NTP-synchronised): past it an id is taken for one that never was.
ID_SKEW_MS = 60_000


async def _mirror(store: EventStore, partition: int, field: str) -> str | None:
    try:
        raw = await store.redis.hget(store.keys.archive(partition), field)
    except RedisError as exc:
        raise StoreUnavailable(str(exc)) from exc
    return as_str(raw) if raw else None


async def _trimmed_past(store: EventStore, partition: int, position: str) -> bool:
    """True when the archiver may have trimmed entries right after ``position``."""
    trimmed = await _mirror(store, partition, "trimmed_below")
    return trimmed is not None and id_key(trimmed) > id_key(successor(position))


# -- the log -------------------------------------------------------------------------------------


Row = tuple[Any, dict[Any, Any]]  # a stream entry as Redis answers it: id, fields


P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class _Shape(Generic[P]):
    """How a reader takes its pages: from the archived segments, from a page of hot rows, and
    the id of a page's last entry."""

    archived: Callable[[ArchiveStore, Manifest, str, int], AsyncGenerator[P, None]]
    hot: Callable[[list[Row]], P]
    last_id: Callable[[P], str]


async def _pages(
    store: EventStore,
    archive: ArchiveStore | None,
    partition: int,
    after: str,
    page: int,
    shape: _Shape[P],
) -> AsyncGenerator[P, None]:
    """The entries of ``partition``'s log strictly after ``after``, in order, in pages of
    ``shape``: the archived ones from their segments, then the hot tail from Redis."""
    position = after
    log = store.keys.log(partition)
    while True:
        if archive is not None:
            manifest = await catalog.latest_manifest(archive, partition)
            async with aclosing(shape.archived(archive, manifest, position, page)) as archived:
                async for taken in archived:
                    position = shape.last_id(taken)
                    yield taken
            if id_key(manifest.position) > id_key(position):
                position = manifest.position  # the rest of the last segment was before `after`
        try:
            while True:
                start = "-" if position in ("0", "0-0") else f"({position}"
                try:
                    rows = await store.redis.xrange(log, start, "+", count=page)
                except RedisError as exc:
                    raise StoreUnavailable(str(exc)) from exc
                if archive is not None and await _trimmed_past(store, partition, position):
                    raise _BackToArchive
                if not rows:
                    return
                position = as_str(rows[-1][0])
                yield shape.hot(rows)
        except _BackToArchive:
            assert archive is not None
            if id_key((await catalog.latest_manifest(archive, partition)).position) <= id_key(
                position
            ):
                raise ArchiveCorrupt(
                    f"partition {partition}: entries after {position} were trimmed from Redis "
                    "but are not in the archive"
                ) from None


class _BackToArchive(Exception):
    """The archiver trimmed past the reader's position while it read the hot tail."""


async def _archived_rows(
    archive: ArchiveStore, manifest: Manifest, after: str, page: int
) -> AsyncGenerator[list[Row], None]:
    low = id_key(after)
    async for info in catalog.log_segments(archive, manifest, after):
        rows = list(await catalog.log_segment(archive, info))
        if id_key(info.first) <= low:  # the first segment may hold entries up to `after`
            rows = [row for row in rows if id_key(row[0]) > low]
        for start in range(0, len(rows), page):
            yield rows[start : start + page]


async def log_pages(
    store: EventStore,
    archive: ArchiveStore | None,
    partition: int,
    after: str = "0-0",
    page: int = PAGE,
) -> AsyncGenerator[list[Entry], None]:
    """The entries of ``partition``'s log strictly after ``after``, in order, in pages: the
    archived ones from their segments, then the hot tail from Redis."""
    async with aclosing(_pages(store, archive, partition, after, page, _ROWS)) as pages:
        async for rows in pages:
            yield [_entry(entry_id, fields) for entry_id, fields in rows]


def _last_row_id(rows: list[Row]) -> str:
    return as_str(rows[-1][0])


def _same(rows: list[Row]) -> list[Row]:
    return rows


_ROWS: _Shape[list[Row]] = _Shape(_archived_rows, _same, _last_row_id)


def _entry(entry_id: Any, fields: dict[Any, Any]) -> Entry:
    raw = fields.get(codec.FIELD)
    if raw is not None and len(fields) == 1:
        return RawEntry(as_str(entry_id), bytes(raw)).decode()
    return entry_from_row(entry_id, fields)


@dataclass(frozen=True, slots=True)
class EventPage:
    """A page of a partition log decoded at once: an event per entry, in order (None for an entry
    that does not decode), and the id of its last entry."""

    events: list[AnyEvent | None]
    last_id: str


# A null entry decodes to None here, as it does not decode on its own either.
_page_decoder = msgspec.json.Decoder(list[AnyEvent | None])


class _LogLine(msgspec.Struct, forbid_unknown_fields=True):
    """A log segment's line of an entry whose only field is its event (engine.archive.segments):
    a line of any other shape (``fields``) fails to decode as one."""

    id: str
    e: AnyEvent | None


_segment_decoder = msgspec.json.Decoder(list[_LogLine])


async def event_pages(
    store: EventStore,
    archive: ArchiveStore | None,
    partition: int,
    after: str = "0-0",
    page: int = PAGE,
) -> AsyncGenerator[EventPage, None]:
    """:func:`log_pages` for a reader that needs only the events (replay): a segment's lines, or
    a hot page's entries, decoded in one call, with no entry object per event."""
    async with aclosing(_pages(store, archive, partition, after, page, _EVENTS)) as pages:
        async for events in pages:
            yield events


def _hot_events(rows: list[Row]) -> EventPage:
    return EventPage(decode_page(rows), as_str(rows[-1][0]))


def _last_event_id(events: EventPage) -> str:
    return events.last_id


async def _archived_events(
    archive: ArchiveStore, manifest: Manifest, after: str, page: int
) -> AsyncGenerator[EventPage, None]:
    """The archived events after ``after`` in pages of at most ``page``: each segment fetched
    while the one before is being folded (its bytes read, checked and decompressed in a thread),
    then decoded in one call (:func:`decode_segment`)."""
    low = id_key(after)
    segments = catalog.log_segments(archive, manifest, after)
    info = await anext(segments, None)
    fetching = _fetch(archive, info) if info is not None else None
    try:
        while info is not None and fetching is not None:
            raw = await fetching
            following = await anext(segments, None)
            fetching = _fetch(archive, following) if following is not None else None
            ids, events = decode_segment(raw)
            begin = 0
            if id_key(info.first) <= low:  # the first segment may hold entries up to `after`
                while begin < len(ids) and id_key(ids[begin]) <= low:
                    begin += 1
            for start in range(begin, len(events), page):
                end = min(start + page, len(events))
                yield EventPage(events[start:end], ids[end - 1])
            info = following
    finally:
        if fetching is not None and not fetching.done():  # the reader stopped early
            fetching.cancel()
            await asyncio.wait([fetching])
        await segments.aclose()


def _fetch(archive: ArchiveStore, info: SegmentInfo) -> asyncio.Task[bytes]:
    """A task reading ``info``'s segment, checked and decompressed, beside whatever runs now."""
    return asyncio.ensure_future(catalog.segment_bytes(archive, info, in_thread=True))


_EVENTS: _Shape[EventPage] = _Shape(_archived_events, _hot_events, _last_event_id)


def decode_segment(raw: bytes) -> tuple[list[str], list[AnyEvent | None]]:
    """The entry ids and the events of a decompressed log segment, in order (None for an entry
    that does not decode): its lines decoded in one typed call, as one JSON array (a line holds
    no newline of its own: engine.archive.segments); when that fails (a line of another shape,
    or an event that does not decode) line by line, as :func:`decode_page` does a page."""
    try:
        lines = _segment_decoder.decode(b"[" + raw.rstrip(b"\n").replace(b"\n", b",") + b"]")
    except (msgspec.ValidationError, msgspec.DecodeError):
        rows = list(log_rows(raw))
        return [entry_id for entry_id, _ in rows], decode_page(rows)
    return [line.id for line in lines], [line.e for line in lines]


def decode_page(rows: list[Row]) -> list[AnyEvent | None]:
    """The events of ``rows``: one typed decode of the page as a JSON array; when that fails (an
    entry of another shape, or one that does not decode) entry by entry, None for each bad one."""
    raws: list[bytes] = []
    for _, fields in rows:
        raw = fields.get(codec.FIELD)
        if raw is None or len(fields) != 1:
            break
        raws.append(raw)
    else:
        try:
            events = _page_decoder.decode(b"[" + b",".join(raws) + b"]")
        except (msgspec.ValidationError, msgspec.DecodeError):
            pass
        else:
            if len(events) == len(rows):  # an entry holding two values would shift the rest
                return events
    return [entry_from_row(entry_id, fields).event for entry_id, fields in rows]


# -- ledgers -------------------------------------------------------------------------------------

LedgerRow = tuple[str, dict[str, str]]  # entry id, fields


async def _hot_ledger(
    store: EventStore, account: str, *, top: str = "+", limit: int | None = None
) -> tuple[int, list[LedgerRow]]:
    """(ledger_through, the account's hot ledger entries after it, newest first), consistent
    with each other."""
    partition = store.keys.partition(account)
    while True:
        through = int(await _mirror(store, partition, "ledger_through") or 0)
        try:
            rows = await store.redis.xrevrange(
                store.keys.ledger(account), max=top, min=f"{through + 1}-0", count=limit
            )
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if int(await _mirror(store, partition, "ledger_through") or 0) == through:
            return through, [
                (as_str(i), {as_str(k): as_str(v) for k, v in f.items()}) for i, f in rows
            ]


async def _archived_ledger(
    archive: ArchiveStore, partition: int, account: str, through: int, *, newest_first: bool
) -> AsyncIterator[list[LedgerRow]]:
    """The account's archived ledger entries, segment by segment (only segments through
    ``through``: what the hot read left out)."""
    manifest = await catalog.latest_manifest(archive, partition)
    segments = [
        s async for s in catalog.ledger_segments(archive, manifest) if s.through_ms <= through
    ]
    if newest_first:
        segments.reverse()
    for info in segments:
        if account not in info.accounts:
            continue
        rows = [(i, f) for a, i, f in await catalog.ledger_segment(archive, info) if a == account]
        if newest_first:
            rows.reverse()
        if rows:
            yield rows


async def ledger_rows(
    store: EventStore, archive: ArchiveStore | None, account: str
) -> list[LedgerRow]:
    """The account's whole ledger, oldest first: archived entries, then the hot ones."""
    through, hot = await _hot_ledger(store, account)
    rows: list[LedgerRow] = []
    if archive is not None and through:
        partition = store.keys.partition(account)
        async for chunk in _archived_ledger(
            archive, partition, account, through, newest_first=False
        ):
            rows.extend(chunk)
    rows.extend(reversed(hot))
    return rows


@dataclass(frozen=True, slots=True)
class LedgerPage:
    rows: list[LedgerRow]
    next_cursor: str | None


async def ledger_page(
    store: EventStore, archive: ArchiveStore | None, account: str, limit: int, cursor: str | None
) -> LedgerPage:
    """Up to ``limit`` entries of the account's ledger before ``cursor`` (an entry id), newest
    first: the hot ones, then on into the archive."""
    top = f"({cursor}" if cursor else "+"
    through, rows = await _hot_ledger(store, account, top=top, limit=limit + 1)
    if len(rows) <= limit and archive is not None and through:
        below = id_key(cursor) if cursor else (2**63, 0)
        partition = store.keys.partition(account)
        async for chunk in _archived_ledger(
            archive, partition, account, through, newest_first=True
        ):
            rows.extend(r for r in chunk if id_key(r[0]) < below)
            if len(rows) > limit:
                break
    page = rows[:limit]
    return LedgerPage(page, page[-1][0] if len(rows) > limit else None)


# -- one execution -------------------------------------------------------------------------------


async def execution_history(
    store: EventStore, archive: ArchiveStore | None, execution_id: str
) -> list[AnyEvent]:
    """The execution's events, in order: its own stream while Redis keeps it, else found in the
    partition log (archive, then hot tail) from the time its id carries. Empty when unknown."""
    events = await store.log.history(execution_id)
    born = id_time_ms(execution_id)
    if events or archive is None or born is None:
        return events
    partition = execution_partition(execution_id)
    needle = f'"execution_id":"{execution_id}"'.encode()
    start = max(0, born - ID_SKEW_MS)
    found: list[AnyEvent] = []
    # A retried dead letter (engine.log.revival) ends more than once: only an end after its latest
    # retry is its last.
    retried = int(await store.redis.hget(store.keys.retried(partition), execution_id) or 0)
    async for entries in log_pages(store, archive, partition, f"{start}-0", page=2_000):
        for entry in entries:
            if needle not in entry.raw or entry.event is None:
                continue
            if entry.event.execution_id == execution_id and entry.event.seq == len(found) + 1:
                found.append(entry.event)
                if is_terminal(entry.event) and entry.event.seq > retried:
                    return found
        if not found and parse_id(entries[-1].entry_id)[0] > born + ID_SKEW_MS:
            return []  # no such execution: it would have been requested by now
    if found and not isinstance(found[0], ExecutionRequested):
        return []
    return found
