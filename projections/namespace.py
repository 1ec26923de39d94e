"""Names inside one projection namespace, the live version, and the transcript index entries.

A namespace is ``engine.log.keys.Keys.view_ns(partition, version)``; everything below lives under
it, so one partition's views, indexes and checkpoint share one hash slot (one atomic script):

    {ns}:ckpt                        string: the last partition-log entry id folded
    {ns}:lease                       string: the projector holding this partition (SET NX PX)
    {ns}:skipped                     counter: undecodable log entries skipped
    {ns}:all                         zset: every execution of the partition, by created_at
    {ns}:x:{execution_id}            string: the view (JSON)
    {ns}:own:{owner}                 zset: an owner's executions, by created_at
    {ns}:active:{owner}              zset: an owner's pending and running executions
    {ns}:rep:{owner}:{reporter_id}   zset: a reporter's executions, by created_at
    {ns}:runs:{owner}:{reporter_id}  zset: the runs of a reporter's schedules, by created_at
    {ns}:packed                      string: created_at through which finished views were packed
    {ns}:unpacked                    zset: views past that mark not finished yet, to pack later
                                     (both projections.retention)
    {ns}:tr:{owner}:{item_id}:{lang} string: the newest transcript pointer (JSON)
    {ns}:trl:{owner}:{item_id}       zset: the item's transcript languages, by time

The live version is the ``projection_version`` field of the ``meta`` hash (default 1).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from engine.connection import RedisClient, as_str
from engine.language import valid_lang
from engine.log.keys import Keys
from engine.log.store import EventStore
from projections.views import ExecutionView

VERSION_FIELD = "projection_version"
DEFAULT_VERSION = 1

# Names that become part of a key: anything else is refused rather than escaped.
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def valid_name(value: str) -> bool:
    """An id safe to place inside a key name."""
    return _NAME.match(value) is not None


@dataclass(frozen=True, slots=True)
class Namespace:
    """The key names of projection ``version`` in ``partition``."""

    keys: Keys
    partition: int
    version: int

    @property
    def base(self) -> str:
        return self.keys.view_ns(self.partition, self.version)

    @property
    def ckpt(self) -> str:
        return f"{self.base}:ckpt"

    @property
    def lease(self) -> str:
        return f"{self.base}:lease"

    @property
    def skipped(self) -> str:
        return f"{self.base}:skipped"

    @property
    def all(self) -> str:
        return f"{self.base}:all"

    def view(self, execution_id: str) -> str:
        return f"{self.view_prefix}{execution_id}"

    @property
    def view_prefix(self) -> str:
        """What an execution id is appended to for its view's name."""
        return f"{self.base}:x:"

    @property
    def packed(self) -> str:
        return f"{self.base}:packed"

    @property
    def unpacked(self) -> str:
        return f"{self.base}:unpacked"

    def owned(self, owner: str) -> str:
        return f"{self.owned_prefix}{owner}"

    @property
    def owned_prefix(self) -> str:
        """What an owner id is appended to for its executions' index."""
        return f"{self.base}:own:"

    def active(self, owner: str) -> str:
        return f"{self.active_prefix}{owner}"

    @property
    def active_prefix(self) -> str:
        """What an owner id is appended to for its active executions' index."""
        return f"{self.base}:active:"

    def reporter(self, owner: str, reporter_id: str) -> str:
        return f"{self.reporter_prefix}{owner}:{reporter_id}"

    @property
    def reporter_prefix(self) -> str:
        """What ``{owner}:{reporter_id}`` is appended to for a reporter's executions' index."""
        return f"{self.base}:rep:"

    def runs(self, owner: str, reporter_id: str) -> str:
        return f"{self.runs_prefix}{owner}:{reporter_id}"

    @property
    def runs_prefix(self) -> str:
        """What ``{owner}:{reporter_id}`` is appended to for a reporter's schedule runs' index."""
        return f"{self.base}:runs:"

    def transcript(self, owner: str, item_id: str, lang: str) -> str:
        return f"{self.base}:tr:{owner}:{item_id}:{lang}"

    def transcript_langs(self, owner: str, item_id: str) -> str:
        return f"{self.base}:trl:{owner}:{item_id}"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of this namespace."""
        return f"{self.base}:*"


def namespace(store: EventStore, partition: int, version: int) -> Namespace:
    return Namespace(store.keys, partition, version)


async def stored_views(
    redis: RedisClient, ns: Namespace, execution_ids: Sequence[str]
) -> list[bytes | None]:
    """The stored bytes of the views of ``execution_ids`` in ``ns`` (None: no view), in order.

    One MGET, not a GET each: a partition's views share its hash slot (so a cluster takes it),
    and one command's reply costs both client and server far less than a pipeline of many."""
    if not execution_ids:
        return []
    raws: list[bytes | None] = await redis.mget([ns.view(xid) for xid in execution_ids])
    return raws


async def current_version(redis: RedisClient, keys: Keys) -> int:
    """The live projection version (``meta`` ``projection_version``, default 1)."""
    raw = await redis.hget(keys.meta, VERSION_FIELD)
    return int(raw) if raw is not None else DEFAULT_VERSION


async def set_version(redis: RedisClient, keys: Keys, version: int) -> None:
    await redis.hset(keys.meta, VERSION_FIELD, version)


class TranscriptPointer(msgspec.Struct, frozen=True, kw_only=True):
    """Where the newest transcript of (owner, item, lang) is: its blob and the step behind it."""

    item_id: str
    lang: str
    execution_id: str
    step_index: int
    sha256: str
    size: int
    chars: int | None = None
    segments: int | None = None
    created_at: int


_pointer_encoder = msgspec.json.Encoder()
_pointer_decoder = msgspec.json.Decoder(TranscriptPointer)


def encode_pointer(pointer: TranscriptPointer) -> bytes:
    return _pointer_encoder.encode(pointer)


def decode_pointer(data: bytes | str) -> TranscriptPointer:
    return _pointer_decoder.decode(data)


def transcripts_of(
    view: ExecutionView, before: ExecutionView | None = None
) -> list[TranscriptPointer]:
    """The transcripts a view's completed steps produced; with ``before`` (the same execution as
    stored earlier), only those it did not hold yet.

    A transcript step completes with ``output = {"kind": "transcript", "item_id", "lang", …}`` and
    ``output_ref`` naming the blob; the item and language come from that preview.
    """
    found: list[TranscriptPointer] = []
    earlier = before.steps if before is not None else ()
    for step in view.steps:
        out = step.output
        if step.status != "done" or out is None or step.output_ref is None:
            continue
        i = step.step_index
        was = earlier[i] if i < len(earlier) else None
        if was is not None and was.status == "done" and was.output_ref == step.output_ref:
            continue  # stored with ``before``, its pointer with it
        if out.get("kind") != "transcript" or step.finished_at is None:
            continue
        item_id, lang = out.get("item_id"), out.get("lang")
        if not isinstance(item_id, str) or not isinstance(lang, str):
            continue
        if not valid_name(item_id) or not valid_lang(lang):
            continue
        found.append(
            TranscriptPointer(
                item_id=item_id,
                lang=lang,
                execution_id=view.execution_id,
                step_index=step.step_index,
                sha256=step.output_ref.sha256,
                size=step.output_ref.size,
                chars=_int_or_none(out.get("chars")),
                segments=_int_or_none(out.get("segments")),
                created_at=step.finished_at,
            )
        )
    return found


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def checkpoints(
    redis: RedisClient, keys: Keys, partitions: range | list[int], version: int | None = None
) -> dict[int, str]:
    """Each partition's checkpoint in ``version`` (default: the live one); ``"0-0"`` when that
    partition was never folded. For status screens and for log trimming, which must stay below
    every checkpoint."""
    if version is None:
        version = await current_version(redis, keys)
    out: dict[int, str] = {}
    for p in partitions:
        raw = await redis.get(Namespace(keys, p, version).ckpt)
        out[p] = "0-0" if raw is None else as_str(raw)
    return out


async def checkpoint_positions(redis: RedisClient, keys: Keys, partition: int) -> dict[str, str]:
    """The log position of every projection version the archiver must not trim past in
    ``partition`` (engine.archive.trim.Consumers): the live version (``"0-0"`` before its first
    fold), every older one still present (until ``replay --drop-previous`` or ``drop`` removes
    it) and a rebuilt one not switched to yet."""
    live = await current_version(redis, keys)
    versions = list(range(1, live + 2))
    pipe = redis.pipeline(transaction=False)
    for version in versions:
        pipe.get(Namespace(keys, partition, version).ckpt)
    raws = await pipe.execute()
    out = {f"projection v{live}": "0-0"}
    for version, raw in zip(versions, raws, strict=True):
        if raw is not None:
            out[f"projection v{version}"] = as_str(raw)
    return out
