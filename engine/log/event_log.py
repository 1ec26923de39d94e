"""The event log: expected-version appends, and reads of execution streams and partition logs.

Topology (see engine.log.keys): each execution has its own stream whose entry ids are ``{seq}-0``,
and every event appended to it is appended, in the same script (:data:`APPEND_BATCH`, at the end
of this module), to its partition's log. Projectors read the partition logs by range from their
own checkpoints (:meth:`EventLog.read_log`); workers never read them: the append of a cancel
request also marks the execution in its partition's cancel set, which the append of its end
clears, and a worker checks that set for the executions it runs (engine.log.leases.cancelled).

An append is all or nothing: its blobs, the records it publishes (a step's document, written only
if absent: :class:`Record`), its money moves (computed by engine.money.billing and
handed over as :class:`Move` data), its events and, for the terminal one, the end of the
execution's lease (engine.log.leases.END_LEASE) are written by one script call, or none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from redis.exceptions import RedisError

from engine.clock import now_ms
from engine.errors import BalanceRefused, ConcurrencyConflict, StoreUnavailable
from engine.log import codec
from engine.log.context import ScriptCall, StoreContext
from engine.log.entries import Entry, entry_from_row
from engine.log.events import AnyEvent, ExecutionCancelRequested, charge_ids, is_terminal
from engine.log.ids import execution_partition
from engine.log.keys import WORKER_GROUP
from engine.log.leases import END_LEASE


class Move(NamedTuple):
    """One balance movement of an append, computed by engine.money.billing: the ``event_index``-th
    event of the append stands for it; ``amount`` is signed (negative takes from the balance)."""

    event_index: int
    kind: str
    charge_id: str
    amount: int
    uncovered: int = 0


class Record(NamedTuple):
    """A record an append publishes with its events (a step's document, built by
    engine.resources.documents): ``value`` is stored under ``key`` only if no record is there, and
    then ``member`` is added (score 0) to each of the ``indexes`` zsets. Every key must carry the
    hash tag of the append's partition; a retried or taken-over append writes nothing twice."""

    key: str
    value: bytes
    member: str
    indexes: tuple[str, ...] = ()


class AppendOp(NamedTuple):
    """One execution's expected-seq append inside :meth:`EventLog.append_many`.

    ``blobs`` are ``(sha256, data)`` pairs stored (SET NX, in the execution's partition) before
    the events, so an event never names a blob that is not stored. ``ack`` is the execution's
    lease (its work-stream entry id): released atomically with a successful append (the terminal
    one), never after a conflict. ``moves`` are the balance movements of the money events among
    ``events`` (engine.money.billing.moves_of), one per money event: they, their ledger entries
    and their applied charge ids are written by the same script, or nothing is. ``owner`` is the
    execution's owner, needed when there are moves or records. ``records`` are published by the
    same script, after the blobs and only when the events are written (:class:`Record`).
    """

    execution_id: str
    expected_seq: int
    events: Sequence[AnyEvent]
    expire_ms: int = 0
    blobs: Sequence[tuple[str, bytes]] = ()
    ack: str | None = None
    owner: str | None = None
    moves: Sequence[Move] = ()
    records: Sequence[Record] = ()


# What append_many answers for one AppendOp: the events stamped, or why they were not written.
AppendResult = list[AnyEvent] | ConcurrencyConflict | BalanceRefused | StoreUnavailable


class EventLog:
    """Appends to and reads of the execution streams and the partition logs."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx
        self._append_batch = ctx.script(APPEND_BATCH)

    # -- writes -----------------------------------------------------------------------------------
    async def append(
        self,
        execution_id: str,
        expected_seq: int,
        events: Sequence[AnyEvent],
        *,
        expire_ms: int = 0,
        owner: str | None = None,
        moves: Sequence[Move] = (),
    ) -> list[AnyEvent]:
        """Append ``events`` as seq ``expected_seq + 1 …`` only if the execution is at
        ``expected_seq``; returns them stamped. ConcurrencyConflict otherwise.

        ``expire_ms`` sets the execution stream's retention (for terminal events). ``moves`` and
        ``owner`` as in :class:`AppendOp`; BalanceRefused (nothing written) when a move would take
        the owner's balance below zero.
        """
        if not events:
            return []
        op = AppendOp(
            execution_id, expected_seq, events, expire_ms=expire_ms, owner=owner, moves=moves
        )
        now = now_ms()
        stamped = _stamp(op, now)
        keys, args = self._batch_call(execution_partition(execution_id), [(op, stamped)], now)
        result = _result(op, stamped, await self._ctx.run(self._append_batch, keys, args), 0)
        if isinstance(result, Exception):
            raise result
        return result

    async def append_many(self, ops: Sequence[AppendOp]) -> list[AppendResult]:
        """Several executions' expected-seq appends in one pipelined round trip.

        Each op is checked and written on its own, atomically, as :meth:`append` would, with its
        blobs, its money moves and its lease release; the ops of one partition share one script
        call (one slot). The answer for each op is its events stamped, a ConcurrencyConflict or a
        BalanceRefused (nothing of that op written), or StoreUnavailable when Redis failed its
        partition's call. StoreUnavailable is raised when the round trip itself failed: any op may
        then have been written or not, and the expected seq makes a retry safe.
        """
        if not ops:
            return []
        now = now_ms()
        stamped = [_stamp(op, now) for op in ops]
        by_partition: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            by_partition.setdefault(execution_partition(op.execution_id), []).append(i)
        calls = [
            self._batch_call(partition, [(ops[i], stamped[i]) for i in members], now)
            for partition, members in by_partition.items()
        ]
        replies = await self._ctx.pipelined(self._append_batch, calls)
        results: list[AppendResult | None] = [None] * len(ops)
        for members, reply in zip(by_partition.values(), replies, strict=True):
            for n, i in enumerate(members):
                op = ops[i]
                if isinstance(reply, Exception):
                    results[i] = StoreUnavailable(f"append to {op.execution_id} failed: {reply}")
                else:
                    results[i] = _result(op, stamped[i], reply, n)
        return [r for r in results if r is not None]

    def _batch_call(
        self, partition: int, ops: Sequence[tuple[AppendOp, list[AnyEvent]]], now: int
    ) -> ScriptCall:
        """KEYS and ARGV of one APPEND_BATCH call for ``ops`` (op, its events stamped), all of
        ``partition``; ``now`` stamps the ledger entries."""
        k = self._ctx.keys
        keys = [k.log(partition), k.charges(partition), k.work(partition), k.running(partition)]
        keys.append(k.cancels(partition))
        args: list[Any] = [WORKER_GROUP, now]
        for op, events in ops:
            moves = _checked_moves(op)
            keys.append(k.execution(op.execution_id))
            if moves:
                keys += self._money_keys(op, partition)
            keys.extend(k.blob(partition, sha256) for sha256, _ in op.blobs)
            args += (op.expected_seq, op.expire_ms, op.ack or "", len(op.blobs), len(events))
            args += (len(moves), op.execution_id, _cancel_mark(events), len(op.records))
            args.extend(data for _, data in op.blobs)
            args.extend(codec.encode(e) for e in events)
            for move in moves:
                args += (move.kind, move.charge_id, move.amount, move.uncovered)
            for record in self._checked_records(op, partition):
                keys.append(record.key)
                keys.extend(record.indexes)
                args += (record.value, record.member, len(record.indexes))
        return keys, args

    def _money_keys(self, op: AppendOp, partition: int) -> list[str]:
        """The owner's balance and ledger, which must share the execution's slot."""
        if op.owner is None:
            raise ValueError(f"{op.execution_id}: an append with money events needs its owner")
        keys = self._ctx.keys
        if keys.partition(op.owner) != partition:
            raise ValueError(f"{op.execution_id} is not in the partition of {op.owner}")
        return [keys.balance(op.owner), keys.ledger(op.owner)]

    def _checked_records(self, op: AppendOp, partition: int) -> Sequence[Record]:
        """``op.records``, after checking that every key they name is in ``partition``'s slot."""
        tag = self._ctx.keys.tag(partition) + ":"
        for record in op.records:
            if not all(key.startswith(tag) for key in (record.key, *record.indexes)):
                raise ValueError(f"{op.execution_id}: a record outside partition {partition}")
        return op.records

    # -- reads ------------------------------------------------------------------------------------
    async def history(self, execution_id: str, after_seq: int = 0) -> list[AnyEvent]:
        """The execution's events after ``after_seq``, in order (empty when unknown)."""
        start = f"({after_seq}-0" if after_seq else "-"
        stream = self._ctx.keys.execution(execution_id)
        try:
            rows = await self._ctx.redis.xrange(stream, start, "+")
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [codec.decode(fields[codec.FIELD]) for _, fields in rows]

    async def histories(self, execution_ids: Sequence[str]) -> dict[str, list[AnyEvent]]:
        """Several executions' histories in one pipelined round trip."""
        if not execution_ids:
            return {}
        pipe = self._ctx.redis.pipeline(transaction=False)
        for xid in execution_ids:
            pipe.xrange(self._ctx.keys.execution(xid), "-", "+")
        try:
            results = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return {
            xid: [codec.decode(fields[codec.FIELD]) for _, fields in rows]
            for xid, rows in zip(execution_ids, results, strict=True)
        }

    async def read_log(self, partition: int, after: str, count: int) -> list[Entry]:
        """Up to ``count`` partition-log entries strictly after stream id ``after`` ("0-0": all)."""
        start = "-" if after in ("0", "0-0") else f"({after}"
        log = self._ctx.keys.log(partition)
        try:
            rows = await self._ctx.redis.xrange(log, start, "+", count=count)
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [entry_from_row(entry_id, fields) for entry_id, fields in rows]

    async def log_length(self, partition: int) -> int:
        """How many entries the partition's log holds."""
        return int(await self._ctx.redis.xlen(self._ctx.keys.log(partition)))


def _stamp(op: AppendOp, now: int) -> list[AnyEvent]:
    """``op``'s events stamped with their seqs (after its expected seq) and ``now``."""
    return [codec.stamp(e, op.expected_seq + i, now) for i, e in enumerate(op.events, 1)]


def _cancel_mark(events: Sequence[AnyEvent]) -> int:
    """What an append does to its execution's place in the cancel set: 2 removes it (the
    execution ends), 1 adds it (a cancel request), 0 leaves it."""
    if any(is_terminal(e) for e in events):
        return 2
    return 1 if any(isinstance(e, ExecutionCancelRequested) for e in events) else 0


def _checked_moves(op: AppendOp) -> Sequence[Move]:
    """``op.moves``, after checking that they name exactly the charge ids the events of ``op``
    carry (engine.log.events.charge_ids), in order: money an event stands for but appended
    without its move would be in the log but not in the balance."""
    carried = [(i, cid) for i, e in enumerate(op.events) for cid in charge_ids(e)]
    if [(m.event_index, m.charge_id) for m in op.moves] != carried:
        raise ValueError(
            f"{op.execution_id}: the moves do not match the money events of the append"
        )
    return op.moves


def _result(op: AppendOp, stamped: list[AnyEvent], reply: Any, n: int) -> AppendResult:
    """The answer for the ``n``-th op of an APPEND_BATCH reply."""
    status, seq, refused, available = (int(x) for x in reply[4 * n : 4 * n + 4])
    if status == 1:
        return stamped
    if status == 0:
        return ConcurrencyConflict(op.execution_id, op.expected_seq, seq)
    return BalanceRefused(op.execution_id, op.moves[refused - 1].event_index, available)


# -- the script -----------------------------------------------------------------------------------
# It touches keys of one hash slot only (cluster-safe).

# The expected-version append, for one or many executions of one partition in one call (the
# worker's batches; EventLog.append is a batch of one). For each op: check its expected seq and
# that the owner's balance covers its money moves taken in order; when both hold, store the blobs
# its events name (SET NX), apply each money move whose charge id is not applied yet (balance,
# applied-charges hash, ledger entry), write each record it publishes unless one is there (and
# then list it in its indexes), append the events to the execution stream and the partition
# log, set the retention, and release the execution's lease (its work-stream entry, see
# engine.log.leases) when one is given, and mark or unmark the execution in the cancel set. Each op
# is all or nothing and independent of the others: a
# StepCompleted never names a blob that is not stored, a money event is never written without its
# money moving (nor money moved without its event), and a terminal append and the end of its lease
# cannot be split.
# KEYS[1] partition log  KEYS[2] partition's applied charges  KEYS[3] work stream
# KEYS[4] running counts  KEYS[5] cancel set  KEYS[6..] per op: its execution stream, then (only
# when it has money moves) the owner's balance and ledger, then its blob keys, then per record its
# key and its index keys
# ARGV[1] group  ARGV[2] now ms  then per op: expected seq, PEXPIRE ms (0: none), lease to
# release ('': none), n blobs, n events, n moves, execution id, cancel mark (1 add, 2 remove, 0
# none), n records, the blob values, the events, then per move: kind, charge id, signed amount
# (micro-coins), uncovered amount, then per record: its value, its index member, n index keys
# -> per op four numbers: 1, new seq, 0, 0 (written) | 0, current seq, 0, 0 (conflict) |
#    2, current seq, n, balance (the op's n-th move would take the balance below zero)
APPEND_BATCH = (
    END_LEASE
    + """
local log, charges, cancels, now = KEYS[1], KEYS[2], KEYS[5], ARGV[2]
local k, a = 6, 3
local out = {}
while a <= #ARGV do
  local stream = KEYS[k]
  local expected = tonumber(ARGV[a])
  local ttl = tonumber(ARGV[a + 1])
  local ack = ARGV[a + 2]
  local blobs = tonumber(ARGV[a + 3])
  local events = tonumber(ARGV[a + 4])
  local moves = tonumber(ARGV[a + 5])
  local xid = ARGV[a + 6]
  local mark = ARGV[a + 7]
  local records = tonumber(ARGV[a + 8])
  a = a + 9
  local balance_key, ledger_key, blob_k = KEYS[k + 1], KEYS[k + 2], k + 1
  if moves > 0 then blob_k = k + 3 end
  local m = a + blobs + events
  local r, rk = m + 4 * moves, blob_k + blobs
  local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  local current = 0
  if #last > 0 then current = tonumber(string.match(last[1][1], '^(%d+)')) end
  local status, refused, available = 1, 0, 0
  if current ~= expected then
    status = 0
  elseif moves > 0 then
    local balance = tonumber(redis.call('GET', balance_key) or '0')
    for j = 0, moves - 1 do
      if redis.call('HEXISTS', charges, ARGV[m + 4 * j + 1]) == 0 then
        local after = balance + tonumber(ARGV[m + 4 * j + 2])
        if after < 0 then
          status, refused, available = 2, j + 1, balance
          break
        end
        balance = after
      end
    end
  end
  if status == 1 then
    for i = 0, blobs - 1 do
      redis.call('SET', KEYS[blob_k + i], ARGV[a + i], 'NX')
    end
    for j = 0, moves - 1 do
      local kind, id = ARGV[m + 4 * j], ARGV[m + 4 * j + 1]
      local amount, uncovered = ARGV[m + 4 * j + 2], ARGV[m + 4 * j + 3]
      if redis.call('HSETNX', charges, id, amount) == 1 then
        redis.call('INCRBY', balance_key, amount)
        -- The balance as Redis stores it: Lua's tostring of a large number would print 1e+14.
        local balance = redis.call('GET', balance_key)
        if uncovered == '0' then
          redis.call('XADD', ledger_key, '*', 'charge_id', id, 'kind', kind, 'amount', amount,
            'balance', balance, 'execution_id', xid, 'at', now)
        else
          redis.call('XADD', ledger_key, '*', 'charge_id', id, 'kind', kind, 'amount', amount,
            'balance', balance, 'execution_id', xid, 'at', now, 'uncovered', uncovered)
        end
      end
    end
    local rr, rrk = r, rk
    for _ = 1, records do
      local n = tonumber(ARGV[rr + 2])
      if redis.call('SET', KEYS[rrk], ARGV[rr], 'NX') then
        for i = 1, n do redis.call('ZADD', KEYS[rrk + i], 0, ARGV[rr + 1]) end
      end
      rr, rrk = rr + 3, rrk + 1 + n
    end
    for i = 0, events - 1 do
      local event = ARGV[a + blobs + i]
      redis.call('XADD', stream, (expected + 1 + i) .. '-0', 'e', event)
      redis.call('XADD', log, '*', 'e', event)
    end
    if ttl > 0 then redis.call('PEXPIRE', stream, ttl) end
    if ack ~= '' then release(KEYS[3], KEYS[4], ARGV[1], ack) end
    if mark == '1' then
      redis.call('SADD', cancels, xid)
    elseif mark == '2' then
      redis.call('SREM', cancels, xid)
    end
    current = expected + events
  end
  out[#out + 1] = status
  out[#out + 1] = current
  out[#out + 1] = refused
  out[#out + 1] = available
  for _ = 1, records do
    rk = rk + 1 + tonumber(ARGV[r + 2])
    r = r + 3
  end
  k, a = rk, r
end
return out
"""
)
