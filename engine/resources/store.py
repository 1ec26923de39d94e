"""Storage shared by every synchronous resource: records, owner indexes, pages and transactions.

A record is a msgspec Struct stored as JSON under ``keys.resource(owner, kind, id)``. Lists are
zsets whose members all score 0, so they are ordered by member, and ids sort by creation time:
newest first is a reverse lexicographic range, and the cursor is the last id of the previous page.
Every key of one owner carries the owner's hash tag, so any set of them can change in one script.

Writes go through :class:`Txn`, one Lua call that first checks guards (a record still holds the
bytes we read, a record exists, an index still has exactly the members we read, an index is under
its quota) and then applies every write, all or nothing. The quota guard is checked in the same
script as the insert, so concurrent creates never pass a quota (``403 quota_exceeded``). A guard
that fails means another request changed what we read: the caller reads again and retries
(:func:`retrying`). That is how cascades (delete a reporter with its workflows and schedules) stay
consistent without locks, on a single Redis and on a cluster.

The record key does not name the owner, so every read checks the stored owner: another owner's
record is NotFound, exactly like a missing one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import msgspec
from redis.exceptions import RedisError

from engine.clock import now_ms
from engine.connection import as_str
from engine.errors import EngineError, InvalidRequest, NotFound, StoreUnavailable
from engine.log.ids import is_id
from engine.runtime import Runtime

T = TypeVar("T")
Rec = TypeVar("Rec", bound=msgspec.Struct)
MAX_RETRIES = 8


def revised(current: Rec, changes: Mapping[str, Any]) -> Rec:
    """``current`` with ``changes`` applied; ``updated_at`` moves only when a field really
    changed, so an empty ``PATCH`` (or one that sets what is already there) changes nothing."""
    updated = msgspec.structs.replace(current, **changes)
    if updated == current:
        return current
    return msgspec.structs.replace(updated, updated_at=now_ms())


# ARGV: n guards, then triples (op, key index, value) — guards first, then writes.
# Guards: eq (GET == value), absent, exists, card (ZCARD == value), has (ZSCORE not nil),
# below (ZCARD < value: a quota, whose failure is told apart).
# Writes: set, del, zadd (score 0), zaddat (value "score member"), zrem.
# -> 1 applied | 0 a guard failed | -1 a quota is full (nothing written either way)
_TXN = """
local n = tonumber(ARGV[1])
local i = 2
for _ = 1, n do
  local op, key, value = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  if op == 'eq' then
    if redis.call('GET', key) ~= value then return 0 end
  elseif op == 'absent' then
    if redis.call('EXISTS', key) == 1 then return 0 end
  elseif op == 'exists' then
    if redis.call('EXISTS', key) == 0 then return 0 end
  elseif op == 'card' then
    if redis.call('ZCARD', key) ~= tonumber(value) then return 0 end
  elseif op == 'has' then
    if not redis.call('ZSCORE', key, value) then return 0 end
  elseif op == 'below' then
    if redis.call('ZCARD', key) >= tonumber(value) then return -1 end
  end
  i = i + 3
end
while i <= #ARGV do
  local op, key, value = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2]
  if op == 'set' then
    redis.call('SET', key, value)
  elseif op == 'del' then
    redis.call('DEL', key)
  elseif op == 'zadd' then
    redis.call('ZADD', key, 0, value)
  elseif op == 'zaddat' then
    local sep = string.find(value, ' ', 1, true)
    redis.call('ZADD', key, string.sub(value, 1, sep - 1), string.sub(value, sep + 1))
  elseif op == 'zrem' then
    redis.call('ZREM', key, value)
  end
  i = i + 3
end
return 1
"""


class Contended(EngineError):
    """A write kept losing to concurrent writes of the same records (409)."""

    code = "conflict"


class QuotaExceeded(EngineError):
    """The account already holds as many of these as its quota allows (403)."""

    code = "quota_exceeded"


class Owned(Protocol):
    """What every record has: the owner it belongs to."""

    @property
    def owner(self) -> str: ...


R = TypeVar("R", bound=Owned)


@dataclass(frozen=True, slots=True)
class Kind(Generic[R]):
    """One resource kind: its id prefix, key name, record type and the noun errors use."""

    prefix: str
    key: str
    noun: str
    type: type[R]
    decoder: msgspec.json.Decoder[R] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "decoder", msgspec.json.Decoder(self.type))

    def missing(self) -> NotFound:
        return NotFound(f"no such {self.noun}")


_encoder = msgspec.json.Encoder()


def encode(record: Any) -> bytes:
    """A record's JSON (msgspec; the same bytes for the same record, so guards can compare)."""
    return _encoder.encode(record)


class Store:
    """Resource keys and reads of one runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.redis = runtime.redis
        self.keys = runtime.store.keys
        self._txn = runtime.redis.register_script(_TXN)

    # -- key names --------------------------------------------------------------------------------
    def record(self, owner: str, kind: Kind[Any], resource_id: str) -> str:
        """The key of one record."""
        return self.keys.resource(owner, kind.key, resource_id)

    def index(self, owner: str, kind: Kind[Any]) -> str:
        """The owner's zset of every record of ``kind``."""
        return self.keys.resource_index(owner, kind.key)

    def children(self, owner: str, relation: str, parent_id: str) -> str:
        """A zset of ids related to ``parent_id`` (``relation`` names it, e.g. ``wfs``)."""
        return self.keys.resource(owner, relation, parent_id)

    # -- reads ------------------------------------------------------------------------------------
    async def load(self, owner: str, kind: Kind[R], resource_id: str) -> tuple[R, bytes]:
        """The owner's record and its stored bytes; NotFound when missing or someone else's."""
        if not is_id(resource_id, kind.prefix):
            raise kind.missing()
        raw = await self.redis.get(self.record(owner, kind, resource_id))
        if raw is None:
            raise kind.missing()
        record = kind.decoder.decode(raw)
        if record.owner != owner:
            raise kind.missing()
        return record, bytes(raw)

    async def load_many(self, owner: str, kind: Kind[R], ids: Sequence[str]) -> list[R]:
        """The owner's records of ``ids`` in that order; missing ones are left out."""
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for resource_id in ids:
            pipe.get(self.record(owner, kind, resource_id))
        found = [kind.decoder.decode(raw) for raw in await pipe.execute() if raw is not None]
        return [r for r in found if r.owner == owner]

    async def members(self, key: str) -> list[str]:
        """Every member of an index zset, in id order."""
        return [as_str(m) for m in await self.redis.zrange(key, 0, -1)]

    async def page(
        self, key: str, prefix: str, *, limit: int, cursor: str | None
    ) -> tuple[list[str], str | None]:
        """A page of ids from an index zset, newest first, and the next cursor (None: last)."""
        if cursor is not None and not is_id(cursor, prefix):
            raise InvalidRequest("cursor: not a cursor this list returned")
        top = f"({cursor}" if cursor else "+"
        ids = [
            as_str(i)
            for i in await self.redis.zrevrangebylex(key, top, "-", start=0, num=limit + 1)
        ]
        page = ids[:limit]
        return page, (page[-1] if len(ids) > limit else None)

    async def list(
        self, owner: str, kind: Kind[R], key: str, *, limit: int, cursor: str | None
    ) -> tuple[list[R], str | None]:
        """A page of the records an index names, newest first, with the next cursor."""
        ids, next_cursor = await self.page(key, kind.prefix, limit=limit, cursor=cursor)
        return await self.load_many(owner, kind, ids), next_cursor

    def txn(self) -> Txn:
        return Txn(self)


class Txn:
    """Guards and writes applied in one script (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._keys: list[str] = []
        self._slots: dict[str, int] = {}
        self._guards: list[Any] = []
        self._writes: list[Any] = []
        self._quota = ""

    def _key(self, key: str) -> int:
        if key not in self._slots:
            self._keys.append(key)
            self._slots[key] = len(self._keys)
        return self._slots[key]

    # -- guards -----------------------------------------------------------------------------------
    def unchanged(self, key: str, raw: bytes) -> Txn:
        """The key still holds exactly ``raw``."""
        self._guards += ["eq", self._key(key), raw]
        return self

    def exists(self, key: str) -> Txn:
        self._guards += ["exists", self._key(key), ""]
        return self

    def absent(self, key: str) -> Txn:
        self._guards += ["absent", self._key(key), ""]
        return self

    def exactly(self, key: str, members: Sequence[str]) -> Txn:
        """The index zset still has exactly ``members`` (no more, no fewer)."""
        slot = self._key(key)
        self._guards += ["card", slot, len(members)]
        for member in members:
            self._guards += ["has", slot, member]
        return self

    def within(self, key: str, quota: int, what: str) -> Txn:
        """The zset ``key`` (an owner's index, a reporter's children) holds fewer than ``quota``
        members: else the commit raises QuotaExceeded naming ``what`` (e.g. "items")."""
        self._guards += ["below", self._key(key), quota]
        self._quota = f"the account holds its quota of {quota} {what}: delete some first"
        return self

    # -- writes -----------------------------------------------------------------------------------
    def put(self, key: str, record: Any) -> Txn:
        self._writes += ["set", self._key(key), encode(record)]
        return self

    def delete(self, key: str) -> Txn:
        self._writes += ["del", self._key(key), ""]
        return self

    def insert(self, key: str, record: Any, index: str, member: str) -> Txn:
        """Create a record that must not exist yet and list it as ``member`` of ``index`` (the
        owner's index, or a parent's children)."""
        return self.absent(key).put(key, record).add(index, member)

    def add(self, key: str, member: str) -> Txn:
        self._writes += ["zadd", self._key(key), member]
        return self

    def add_at(self, key: str, member: str, score: int) -> Txn:
        """Add ``member`` to the zset ``key`` with ``score`` (or move it there)."""
        self._writes += ["zaddat", self._key(key), f"{score} {member}"]
        return self

    def remove(self, key: str, member: str) -> Txn:
        self._writes += ["zrem", self._key(key), member]
        return self

    async def commit(self) -> bool:
        """Apply the writes if every guard holds; False (nothing written) when one does not.
        QuotaExceeded (nothing written) when a :meth:`within` quota is full."""
        args = [len(self._guards) // 3, *self._guards, *self._writes]
        try:
            applied = int(await self._store._txn(keys=self._keys, args=args))
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        if applied == -1:
            raise QuotaExceeded(self._quota)
        return applied == 1


async def retrying(attempt: Callable[[], Awaitable[T | None]]) -> T:
    """Run ``attempt`` (read, build a Txn, commit) until it commits; it returns None when its
    guards failed. A guard fails only when another request changed the same records, so a few
    rounds always settle; past MAX_RETRIES something is wrong and the caller gets a conflict."""
    for _ in range(MAX_RETRIES):
        result = await attempt()
        if result is not None:
            return result
    raise Contended("the resource kept changing under this request; try again")
