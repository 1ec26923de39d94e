"""What the API reads: executions, lists, schedule runs, transcripts and raw histories of one
owner, as views (``projections.views``); the API renders them (``api.render``).

Every call is owner-scoped: another owner's execution looks exactly like an unknown one (None).
Ids are checked by shape before they come near a key. The live projection version is read on
every call, so a ``replay.switch`` is seen at once.

Read-your-writes: when an execution's view is missing (the projector has not caught up with a
request just accepted), its own stream is folded on the fly, so a GET right after the 202 never
answers 404. The lists (an owner's executions, active or all, and a reporter's) do the same: the
partition log past the projector's checkpoint (newest first, at most :data:`UNFOLDED_SCAN`
entries: the projector's lag, nothing when it is current) is searched for the owner's requests,
whose streams are folded and merged into the page, so an execution is listed from its 202 on.
An execution whose view was evicted (view retention) and whose stream expired is folded the same
way from its events in the archive (engine.archive.reader): slower, still correct.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
import orjson
from redis.exceptions import RedisError

from engine.archive import reader
from engine.connection import as_str
from engine.errors import ArchiveError, InvalidRequest, StoreError, StoreUnavailable
from engine.language import valid_lang
from engine.log.entries import raw_entry_from_row
from engine.log.events import AnyEvent, ExecutionRequested
from engine.log.ids import execution_partition, is_id, run_execution_id
from engine.log.store import EventStore
from engine.runtime import Runtime
from projections import progress
from projections.fold import FoldGap, fold
from projections.namespace import (
    Namespace,
    current_version,
    decode_pointer,
    stored_views,
    valid_name,
)
from projections.views import (
    ExecutionView,
    Page,
    RunDetailView,
    RunView,
    TranscriptView,
    decode_view,
    is_active,
)

V = TypeVar("V")

MAX_LIMIT = 100
# Log entries past the projector's checkpoint searched for requests not folded yet (newest
# first). The projector keeps well within it (its lag is a batch or two); far behind, the oldest
# unfolded requests would wait for it to reach them.
UNFOLDED_SCAN = 2000
UNFOLDED_KEPT = 2 * MAX_LIMIT  # of those, the newest requests merged into a page
_REQUESTED = "ExecutionRequested"
_SCORE = re.compile(r"[0-9]{1,16}")  # str.isdigit() would pass digits int() cannot read


class Queries:
    """Owner-scoped reads over the live projection."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.store: EventStore = runtime.store
        self.redis = runtime.redis

    async def _ns_of_owner(self, owner: str) -> Namespace:
        version = await current_version(self.redis, self.store.keys)
        return Namespace(self.store.keys, self.store.keys.partition(owner), version)

    def _owns_partition(self, owner: str, execution_id: str) -> bool:
        if not is_id(execution_id, "exc"):
            return False
        return execution_partition(execution_id) == self.store.keys.partition(owner)

    # -- one execution ----------------------------------------------------------------------------
    async def get_view(self, owner: str, execution_id: str) -> ExecutionView | None:
        """The owner's execution view, folded from its stream when the projector is behind;
        None when unknown, malformed or another owner's."""
        if not self._owns_partition(owner, execution_id):
            return None
        ns = await self._ns_of_owner(owner)
        raw = await self.redis.get(ns.view(execution_id))
        view: ExecutionView | None = None
        if raw is not None:
            try:
                view = decode_view(raw)
            except ValueError:
                view = None
        if view is None:
            # No view: a request just accepted (its stream folds at once), a view evicted by the
            # view retention (only then is the log searched), or no such execution.
            known = self.runtime.settings.view_retention_seconds > 0
            view = await self._fold_stream(execution_id, known=known)
        if view is None or view.owner != owner:
            return None
        return view

    async def _events(self, execution_id: str, *, known: bool) -> list[AnyEvent]:
        """The execution's events: its stream, or once that has expired, the partition log
        (archive, then hot tail) when the execution is ``known`` to have existed: searching the
        log for an id that never did costs a scan of the minutes around its time."""
        events = await self.store.log.history(execution_id)
        if events or not known:
            return events
        return await reader.execution_history(self.store, self.runtime.archive, execution_id)

    async def _fold_stream(self, execution_id: str, *, known: bool) -> ExecutionView | None:
        try:
            events = await self._events(execution_id, known=known)
        except (StoreError, ArchiveError):
            return None
        if not events:
            return None
        try:
            return fold(events)
        except (FoldGap, ValueError):
            return None

    async def history(self, owner: str, execution_id: str) -> list[AnyEvent] | None:
        """The events of an owned execution, in order; None when not the owner's."""
        if not self._owns_partition(owner, execution_id):
            return None
        ns = await self._ns_of_owner(owner)
        known = bool(await self.redis.exists(ns.view(execution_id)))
        known = known or self.runtime.settings.view_retention_seconds > 0
        events = await self._events(execution_id, known=known)
        first = events[0] if events else None
        if not isinstance(first, ExecutionRequested) or first.owner != owner:
            return None
        return events

    async def blob(self, owner: str, sha256: str) -> bytes | None:
        """A blob of the owner's partition (a step's large output), or None."""
        return await self.store.blobs.get(self.store.keys.partition(owner), sha256)

    # -- lists ------------------------------------------------------------------------------------
    async def list_executions(
        self, owner: str, *, active: bool, limit: int, cursor: str | None
    ) -> Page[ExecutionView]:
        """A page of the owner's executions, newest first (``active``: pending and running
        only), with the cursor of the next page (None on the last page).

        InvalidRequest for a malformed cursor.
        """
        ns = await self._ns_of_owner(owner)
        key = ns.active(owner) if active else ns.owned(owner)
        unfolded = await self._unfolded(ns, owner, None)
        if active:
            unfolded = [v for v in unfolded if is_active(v)]
        return await self._page(ns, key, owner, limit, cursor, _same, unfolded)

    async def list_reporter_executions(
        self, owner: str, reporter_id: str, *, limit: int, cursor: str | None
    ) -> Page[ExecutionView]:
        """A reporter's executions (scheduled runs too), newest first, paged like
        :meth:`list_executions`."""
        if not valid_name(reporter_id):
            return Page(views=[], next_cursor=None)
        ns = await self._ns_of_owner(owner)
        key = ns.reporter(owner, reporter_id)
        unfolded = await self._unfolded(ns, owner, reporter_id)
        return await self._page(ns, key, owner, limit, cursor, _same, unfolded)

    async def _unfolded(
        self, ns: Namespace, owner: str, reporter_id: str | None
    ) -> list[ExecutionView]:
        """The owner's executions (of ``reporter_id`` when given) requested in the partition log
        past the projector's checkpoint, folded from their streams: what the lists must show
        although the projector has not folded it yet."""
        checkpoint = await self.redis.get(ns.ckpt)
        floor = "-" if checkpoint is None else f"({as_str(checkpoint)}"
        if floor in ("(0-0", "(0"):
            floor = "-"
        try:
            rows = await self.redis.xrevrange(
                self.store.keys.log(ns.partition), "+", floor, count=UNFOLDED_SCAN
            )
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        wanted: list[str] = []
        # The owner's id as the encoded events spell it: another owner's request (most of a busy
        # partition's window) is passed over without being decoded.
        mark = msgspec.json.encode(owner)
        for entry_id, fields in rows:
            raw = raw_entry_from_row(entry_id, fields)
            if raw.event_type != _REQUESTED or mark not in raw.raw:
                continue
            event = raw.decode().event
            if not isinstance(event, ExecutionRequested) or event.owner != owner:
                continue
            if reporter_id is None or event.reporter_id == reporter_id:
                wanted.append(event.execution_id)
                if len(wanted) > UNFOLDED_KEPT:
                    break  # newer than any page but the first few could show
        if not wanted:
            return []
        views = []
        for events in (await self.store.log.histories(wanted)).values():
            try:
                views.append(fold(events))
            except (FoldGap, ValueError):
                continue  # a stream already expired, or damaged: the projector has the last word
        return views

    # -- schedule runs ----------------------------------------------------------------------------
    async def list_runs(
        self, owner: str, reporter_id: str, *, limit: int, cursor: str | None
    ) -> Page[RunView]:
        """The runs of a reporter's schedules, newest first (``progress.run``), paged like
        :meth:`list_executions`."""
        if not valid_name(reporter_id):
            return Page(views=[], next_cursor=None)
        ns = await self._ns_of_owner(owner)
        key = ns.runs(owner, reporter_id)
        return await self._page(ns, key, owner, limit, cursor, progress.run)

    async def get_run(self, owner: str, reporter_id: str, run: str) -> RunDetailView | None:
        """One run of a reporter's schedules with its per-item events (``progress.run_detail``);
        None when it is not a run of that reporter of this owner."""
        execution_id = run_execution_id(run, self.store.keys.partition(owner))
        if execution_id is None:
            return None
        view = await self.get_view(owner, execution_id)
        if view is None or view.kind != "schedule_run" or view.reporter_id != reporter_id:
            return None
        return progress.run_detail(view)

    async def _page(
        self,
        ns: Namespace,
        key: str,
        owner: str,
        limit: int,
        cursor: str | None,
        derive: Callable[[ExecutionView], V],
        unfolded: Sequence[ExecutionView] = (),
    ) -> Page[V]:
        """The views of the members of ``key`` after ``cursor`` (``derive``d), newest first, with
        the ``unfolded`` views (not in the index yet) merged in their places."""
        limit = max(1, min(limit, MAX_LIMIT))
        after = _parse_cursor(cursor) if cursor else None
        ids = await self._ids_before(key, after, limit + 1)
        extra = {
            v.execution_id: v
            for v in unfolded
            if after is None or (v.created_at, v.execution_id) < after
        }
        if extra:
            listed = {xid for xid, _ in ids}
            ids += [(x, v.created_at) for x, v in extra.items() if x not in listed]
            ids.sort(key=lambda row: (row[1], row[0]), reverse=True)
        more = len(ids) > limit
        ids = ids[:limit]
        if not ids:
            return Page(views=[], next_cursor=None)
        raws = await stored_views(self.redis, ns, [xid for xid, _ in ids])
        out: list[V] = []
        for (xid, _), raw in zip(ids, raws, strict=True):
            # The projector's view when it has one (it may have folded meanwhile), else ours.
            view = decode_view(raw) if raw is not None else extra.get(xid)
            if view is not None and view.owner == owner:
                out.append(derive(view))
        last_id, last_score = ids[-1]
        return Page(views=out, next_cursor=_make_cursor(last_score, last_id) if more else None)

    async def _ids_before(
        self, key: str, after: tuple[int, str] | None, want: int
    ) -> list[tuple[str, int]]:
        """Members in (score, member) descending order strictly below ``after``."""
        if after is None:
            rows = await self.redis.zrevrange(key, 0, want - 1, withscores=True)
            return [(as_str(m), int(s)) for m, s in rows]
        score, member = after
        found: list[tuple[str, int]] = []
        offset = 0
        # Members sharing the cursor's score (same millisecond) sort by id: skip the ones at or
        # above the cursor. Few share a millisecond, so this loop runs once or twice.
        while len(found) < want:
            rows = await self.redis.zrevrangebyscore(
                key, score, "-inf", start=offset, num=want, withscores=True
            )
            if not rows:
                break
            offset += len(rows)
            for m, s in rows:
                xid, sc = as_str(m), int(s)
                if sc == score and xid >= member:
                    continue
                found.append((xid, sc))
        return found[:want]

    # -- transcripts ------------------------------------------------------------------------------
    async def get_transcript(
        self, owner: str, item_id: str, lang: str | None
    ) -> TranscriptView | None:
        """The newest transcript of the owner's item in ``lang`` (None: in any language), or
        None."""
        if not valid_name(item_id) or (lang is not None and not valid_lang(lang)):
            return None
        ns = await self._ns_of_owner(owner)
        if lang is None:
            newest = await self.redis.zrevrange(ns.transcript_langs(owner, item_id), 0, 0)
            if not newest:
                return None
            lang = as_str(newest[0])
        raw = await self.redis.get(ns.transcript(owner, item_id, lang))
        if raw is None:
            return None
        pointer = decode_pointer(raw)
        blob = await self.store.blobs.get(ns.partition, pointer.sha256)
        if blob is None:
            return None
        text, segments = _transcript_body(blob)
        return TranscriptView(
            item_id=pointer.item_id,
            lang=pointer.lang,
            text=text,
            segments=segments,
            execution_id=pointer.execution_id,
            created_at=pointer.created_at,
        )


def _same(view: ExecutionView) -> ExecutionView:
    return view


def _transcript_body(blob: bytes) -> tuple[str, list[Any]]:
    """Text and segments of a transcript blob (``{"lang", "text", "segments", …}`` JSON)."""
    try:
        data = orjson.loads(blob)
    except orjson.JSONDecodeError:
        return blob.decode(errors="replace"), []
    if isinstance(data, dict):
        text = data.get("text")
        segments = data.get("segments")
        return (
            text if isinstance(text, str) else "",
            segments if isinstance(segments, list) else [],
        )
    return (data if isinstance(data, str) else ""), []


def _make_cursor(score: int, execution_id: str) -> str:
    return f"{score}.{execution_id}"


def _parse_cursor(cursor: str) -> tuple[int, str]:
    score, sep, xid = cursor.partition(".")
    if not sep or not _SCORE.fullmatch(score) or not is_id(xid, "exc"):
        raise InvalidRequest("malformed cursor")
    return int(score), xid
