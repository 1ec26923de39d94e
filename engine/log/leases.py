"""Leases: which worker runs which execution, and which of them have a cancel request.

Dispatch (docs/decisions/0002): accepting a request (engine.log.admission) puts the execution at
the end of its owner's ready list, and the owner in its partition's ring. :meth:`Leases.dispatch`
leases executions owners in turn, skipping owners whose leased executions reached the per-owner
cap, so neither the depth of one owner's backlog nor the number of workers decides when another
owner's execution starts.

A worker's *lease* on an execution is the pending-entries-list (PEL) entry of the execution's
entry in the partition's work stream (decision 0001, moved off the log by 0002): the worker renews
it by resetting its idle time (``renew``), another worker takes it over once it has been idle
longer than the lease (``claim_expired``, XAUTOCLAIM), and its delivery count is the lease
*epoch*. The lease is also the owner's cap slot: it is counted while pending and given back when
the terminal append (engine.log.event_log, with :data:`END_LEASE`), ``release`` or a dead letter
ends it, so a crash never leaks one. A stale worker's late write is refused by the expected-version
append, never duplicated.

Workers never read the partition logs: a cancel request reaches the worker running the execution
through the partition's cancel set (:meth:`Leases.cancelled`, kept by the appends). The Lua
scripts are at the end of this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from engine.clock import now_ms
from engine.connection import as_str
from engine.errors import StoreUnavailable
from engine.log import codec
from engine.log.context import ScriptCall, StoreContext
from engine.log.entries import Entry, entry_from_row
from engine.log.events import AnyEvent
from engine.log.keys import WORKER_GROUP


@dataclass(frozen=True, slots=True)
class Lease:
    """An execution :meth:`Leases.dispatch` leased: ``entry`` is its work-stream entry (the lease
    id, the ExecutionRequested, delivery 1) and ``history`` its events so far."""

    entry: Entry
    history: list[AnyEvent]


class Leases:
    """Dispatch, lease renewal and takeover, dead letters, and the cancel sets."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx
        self._dispatch = ctx.script(DISPATCH)
        self._touch = ctx.script(TOUCH)
        self._claim = ctx.script(CLAIM)
        self._release = ctx.script(RELEASE)
        self._dead_letter = ctx.script(DEAD_LETTER)

    # -- dispatch: the worker group on the work streams -------------------------------------------
    async def dispatch(
        self, counts: Mapping[int, int], consumer: str, owner_cap: int = 0
    ) -> dict[int, list[Lease]]:
        """Lease up to ``counts[p]`` executions of each partition ``p`` to ``consumer``, one
        pipelined round trip: owners in turn, oldest first within an owner, skipping owners that
        hold ``owner_cap`` leases already (0: no cap). Partitions with nothing to lease are left
        out of the answer."""
        keys = self._ctx.keys
        calls: list[ScriptCall] = []
        for p, n in counts.items():
            args: list[Any] = [
                WORKER_GROUP,
                consumer,
                n,
                owner_cap,
                keys.ready_prefix(p),
                keys.execution_prefix(p),
            ]
            calls.append(([keys.ring(p), keys.work(p), keys.running(p)], args))
        out: dict[int, list[Lease]] = {}
        for p, reply in zip(counts, await self._ctx.pipelined(self._dispatch, calls), strict=True):
            if isinstance(reply, Exception):
                raise StoreUnavailable(f"dispatch on partition {p} failed: {reply}")
            leases = [_lease(entry_id, history) for entry_id, history in reply]
            if leases:
                out[p] = leases
        return out

    async def queued(self, partition: int) -> int:
        """Executions of ``partition`` waiting for a lease (the ready lists of its ring)."""
        redis, keys = self._ctx.redis, self._ctx.keys
        owners = await redis.lrange(keys.ring(partition), 0, -1)
        if not owners:
            return 0
        pipe = redis.pipeline(transaction=False)
        for owner in owners:
            pipe.llen(keys.ready(as_str(owner)))
        return sum(int(n) for n in await pipe.execute())

    async def leased(self, partition: int) -> dict[str, int]:
        """Executions leased right now in ``partition``, by owner (what the cap counts)."""
        counts = await self._ctx.redis.hgetall(self._ctx.keys.running(partition))
        return {as_str(owner): int(n) for owner, n in counts.items()}

    # -- holding, losing and ending leases --------------------------------------------------------
    async def renew(self, partition: int, consumer: str, entry_ids: Sequence[str]) -> list[bool]:
        """Renew the leases ``consumer`` still holds; False for each one lost to a takeover."""
        return await self._touch_leases(partition, consumer, entry_ids, idle_ms=0)

    async def renew_many(
        self, leases: Mapping[int, Sequence[str]], consumer: str
    ) -> dict[int, list[bool]]:
        """:meth:`renew` for several partitions in one pipelined round trip."""
        asked = {p: list(ids) for p, ids in leases.items() if ids}
        keys = self._ctx.keys
        calls: list[ScriptCall] = [
            ([keys.work(p)], [WORKER_GROUP, consumer, 0, *ids]) for p, ids in asked.items()
        ]
        out: dict[int, list[bool]] = {p: [] for p in leases}
        for p, reply in zip(asked, await self._ctx.pipelined(self._touch, calls), strict=True):
            if isinstance(reply, Exception):
                raise StoreUnavailable(f"renewing leases of partition {p} failed: {reply}")
            out[p] = [int(x) == 1 for x in reply]
        return out

    async def hand_back(self, partition: int, consumer: str, entry_ids: Sequence[str]) -> None:
        """Give leases up early (graceful shutdown): the next claim by any worker takes them."""
        idle_ms = 10 * self._ctx.settings.lease_ms
        await self._touch_leases(partition, consumer, entry_ids, idle_ms=idle_ms)

    async def _touch_leases(
        self, partition: int, consumer: str, entry_ids: Sequence[str], idle_ms: int
    ) -> list[bool]:
        if not entry_ids:
            return []
        keys = [self._ctx.keys.work(partition)]
        args: list[Any] = [WORKER_GROUP, consumer, idle_ms, *entry_ids]
        return [int(x) == 1 for x in await self._ctx.run(self._touch, keys, args)]

    async def claim_expired(
        self, partition: int, consumer: str, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        """Take over every lease of ``partition`` idle longer than ``min_idle_ms``.

        Each returned Entry is the lease's ExecutionRequested with its delivery count (the lease
        epoch, bumped by this takeover).
        """
        return await self._claim_idle(self._ctx.keys.work(partition), consumer, min_idle_ms, count)

    async def claim_expired_many(
        self, partitions: Sequence[int], consumer: str, min_idle_ms: int, count: int = 100
    ) -> dict[int, list[Entry]]:
        """:meth:`claim_expired` on every partition of ``partitions``: the first page of each in
        one pipelined round trip, then the rest of the few that have more. Partitions with
        nothing to take over are left out of the answer."""
        work = self._ctx.keys.work
        calls: list[ScriptCall] = [
            ([work(p)], [WORKER_GROUP, consumer, min_idle_ms, "0-0", count]) for p in partitions
        ]
        out: dict[int, list[Entry]] = {}
        for p, reply in zip(partitions, await self._ctx.pipelined(self._claim, calls), strict=True):
            if isinstance(reply, Exception):
                raise StoreUnavailable(f"claiming leases of partition {p} failed: {reply}")
            claimed = _claimed(reply)
            cursor = as_str(reply[0])
            if cursor != "0-0":
                claimed += await self._claim_idle(work(p), consumer, min_idle_ms, count, cursor)
            if claimed:
                out[p] = claimed
        return out

    async def release(self, partition: int, entry_ids: Sequence[str]) -> None:
        """End leases whose execution needs nothing more, giving their owners' slots back."""
        await self.release_many({partition: list(entry_ids)})

    async def release_many(self, leases: Mapping[int, Sequence[str]]) -> None:
        """:meth:`release` for several partitions in one round trip."""
        keys = self._ctx.keys
        calls: list[ScriptCall] = [
            ([keys.work(p), keys.running(p)], [WORKER_GROUP, *ids])
            for p, ids in leases.items()
            if ids
        ]
        if not calls:
            return
        for reply in await self._ctx.pipelined(self._release, calls):
            if isinstance(reply, Exception):
                raise StoreUnavailable(f"release failed: {reply}")

    # -- cancels --------------------------------------------------------------------------------
    async def cancelled(self, executions: Mapping[int, Sequence[str]]) -> set[str]:
        """Which of ``executions`` (execution ids by partition) have a cancel request and no end
        yet: the cancel sets the appends keep (engine.log.event_log), one pipelined round trip."""
        asked = {p: list(ids) for p, ids in executions.items() if ids}
        if not asked:
            return set()
        pipe = self._ctx.redis.pipeline(transaction=False)
        for p, ids in asked.items():
            pipe.smismember(self._ctx.keys.cancels(p), ids)
        try:
            replies = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return {
            xid
            for ids, flags in zip(asked.values(), replies, strict=True)
            for xid, flag in zip(ids, flags, strict=True)
            if int(flag)
        }

    async def _claim_idle(
        self, stream: str, consumer: str, min_idle_ms: int, count: int, cursor: str = "0-0"
    ) -> list[Entry]:
        claimed: list[Entry] = []
        while True:
            args: list[Any] = [WORKER_GROUP, consumer, min_idle_ms, cursor, count]
            reply = await self._ctx.run(self._claim, [stream], args)
            cursor = as_str(reply[0])
            claimed += _claimed(reply)
            if cursor == "0-0":
                return claimed

    # -- dead letters -----------------------------------------------------------------------------
    async def dead_letter_lease(self, partition: int, entry: Entry, reason: str) -> None:
        """Move lease ``entry`` (its ExecutionRequested) to the partition's dead-letter stream and
        release it, atomically."""
        keys = self._ctx.keys
        streams = [keys.work(partition), keys.dead(partition), keys.running(partition)]
        args: list[Any] = [
            WORKER_GROUP,
            entry.entry_id,
            reason,
            entry.raw,
            entry.deliveries,
            now_ms(),
        ]
        await self._ctx.run(self._dead_letter, streams, args)

    async def dead_letters(self, partition: int, count: int = 100) -> list[dict[str, str]]:
        """The newest dead-lettered entries of ``partition``, oldest first."""
        dead = self._ctx.keys.dead(partition)
        rows = await self._ctx.redis.xrevrange(dead, "+", "-", count=count)
        # A poison payload need not be UTF-8 (that may be why it was dead-lettered): listing it
        # must not fail, so undecodable bytes are shown as U+FFFD.
        return [
            {
                "dead_id": as_str(eid),
                **{as_str(k): as_str(v, errors="replace") for k, v in fields.items()},
            }
            for eid, fields in reversed(rows)
        ]


def _claimed(reply: Any) -> list[Entry]:
    """The leases of one CLAIM reply, each with its delivery count."""
    out: list[Entry] = []
    for entry_id, flat, deliveries in reply[1]:
        fields = dict(zip(flat[::2], flat[1::2], strict=True))
        out.append(entry_from_row(entry_id, fields, int(deliveries)))
    return out


def _lease(entry_id: bytes | str, history: list[bytes]) -> Lease:
    """A DISPATCH reply's lease: its work-stream entry and the execution's history so far."""
    events = [codec.decode(raw) for raw in history]
    return Lease(Entry(as_str(entry_id), events[0], bytes(history[0])), events)


# -- the scripts ----------------------------------------------------------------------------------
# Each touches keys of one hash slot only (cluster-safe).

# Ending a lease (prepended to the scripts that end one, APPEND_BATCH of engine.log.event_log among
# them): acknowledge the execution's entry of the work stream, delete it (the work stream only
# holds live leases), and give its owner's slot back. The slot is given back only when the entry
# was still pending, so a second release is a no-op and the running count always equals the
# owner's pending entries.
END_LEASE = """
local function release(work, running, group, id)
  local entry = redis.call('XRANGE', work, id, id)
  if redis.call('XACK', work, group, id) == 0 then return 0 end
  redis.call('XDEL', work, id)
  if #entry > 0 then
    local owner = entry[1][2][2]
    if redis.call('HINCRBY', running, owner, -1) <= 0 then redis.call('HDEL', running, owner) end
  end
  return 1
end
"""

# Lease up to n executions of one partition, owners in turn: take the owner at the head of the
# ring and move it to the tail; skip it while its leases are at the cap; otherwise pop its oldest
# ready execution (the owner leaves the ring when that was its last) and lease it: a work-stream
# entry read at once by the consumer through the group, so that entry's pending entry is the lease,
# exactly as decision 0001 describes, and the owner's running count goes up by one. Only this script
# adds to the work stream and it reads each entry as it adds it, so '>' always delivers that entry.
# Stops when n are leased, the ring is empty, or every owner left in it is at the cap.
# KEYS[1] ring  KEYS[2] work stream  KEYS[3] running counts
# ARGV[1] group  ARGV[2] consumer  ARGV[3] n  ARGV[4] per-owner cap (0: none)
# ARGV[5] ready-list prefix  ARGV[6] execution-stream prefix (engine.log.keys: both in this slot)
# -> per lease {entry id, {event, ...}}: the execution's history so far, ExecutionRequested first
DISPATCH = """
local ring, work, running = KEYS[1], KEYS[2], KEYS[3]
local want, cap = tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {}
local skipped = 0
while #out < want and skipped < redis.call('LLEN', ring) do
  local owner = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
  if cap > 0 and tonumber(redis.call('HGET', running, owner) or '0') >= cap then
    skipped = skipped + 1
  else
    skipped = 0
    local ready = ARGV[5] .. owner
    local xid = redis.call('LPOP', ready)
    if redis.call('LLEN', ready) == 0 then redis.call('LREM', ring, -1, owner) end
    local rows = {}
    if xid then rows = redis.call('XRANGE', ARGV[6] .. xid, '-', '+') end
    if #rows > 0 then
      local history = {}
      for i, row in ipairs(rows) do history[i] = row[2][2] end
      local id = redis.call('XADD', work, '*', 'o', owner, 'e', history[1])
      redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', work, '>')
      redis.call('HINCRBY', running, owner, 1)
      out[#out + 1] = {id, history}
    end
  end
end
return out
"""

# Renew (idle 0) or hand back (idle = a large number) leases this consumer still holds.
# KEYS[1] work stream  ARGV[1] group  ARGV[2] consumer  ARGV[3] idle ms  ARGV[4..] entry ids
# -> one 1 (still ours) or 0 (taken over or gone) per id
TOUCH = """
local held = {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p > 0 and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'IDLE', tonumber(ARGV[3]), 'JUSTID')
    held[#held + 1] = 1
  else
    held[#held + 1] = 0
  end
end
return held
"""

# Take over leases (entries of the work stream) idle longer than a lease, with each one's delivery
# count.
# KEYS[1] work stream
# ARGV[1] group  ARGV[2] consumer  ARGV[3] min idle ms  ARGV[4] cursor  ARGV[5] count
# -> {next_cursor, {{id, fields, deliveries}, ...}}
CLAIM = """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4],
  'COUNT', tonumber(ARGV[5]))
local out = {}
for _, entry in ipairs(r[2]) do
  if entry and entry[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    local n = 1
    if #p > 0 then n = p[1][4] end
    out[#out + 1] = {entry[1], entry[2], n}
  end
end
return {r[1], out}
"""

# End leases whose execution needs nothing more (found terminal on a redelivery).
# KEYS[1] work stream  KEYS[2] running counts  ARGV[1] group  ARGV[2..] entry ids
# -> how many were still pending
RELEASE = (
    END_LEASE
    + """
local n = 0
for i = 2, #ARGV do n = n + release(KEYS[1], KEYS[2], ARGV[1], ARGV[i]) end
return n
"""
)

# Move a lease to the dead-letter stream and release it, atomically.
# KEYS[1] work stream  KEYS[2] dead-letter stream  KEYS[3] running counts
# ARGV[1] group  ARGV[2] entry id  ARGV[3] reason  ARGV[4] payload  ARGV[5] deliveries  ARGV[6] now
DEAD_LETTER = (
    END_LEASE
    + """
redis.call('XADD', KEYS[2], '*', 'entry_id', ARGV[2], 'reason', ARGV[3], 'e', ARGV[4],
  'deliveries', ARGV[5], 'at', ARGV[6])
return release(KEYS[1], KEYS[3], ARGV[1], ARGV[2])
"""
)
