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
        ``partition``; ``now`` stamps the ledger entries. Each op travels as one header argument
        and one per payload (:func:`_packed`): redis-py encodes every argument on its own, so one
        for all of an op's small fields instead of a dozen or more is most of what building the
        call costs."""
        k = self._ctx.keys
        keys = [k.log(partition), k.charges(partition), k.work(partition), k.running(partition)]
        keys.append(k.cancels(partition))
        args: list[Any] = [WORKER_GROUP, now, k.execution_prefix(partition)]
        args += (k.balance_prefix(partition), k.ledger_prefix(partition), k.blob_prefix(partition))
        for op, events in ops:
            moves = _checked_moves(op)
            if moves:
                self._check_owner(op, partition)
            args += _packed(op, events, moves, self._checked_records(op, partition))
        return keys, args

    def _check_owner(self, op: AppendOp, partition: int) -> None:
        """The owner's balance and ledger must share the execution's slot."""
        if op.owner is None:
            raise ValueError(f"{op.execution_id}: an append with money events needs its owner")
        if self._ctx.keys.partition(op.owner) != partition:
            raise ValueError(f"{op.execution_id} is not in the partition of {op.owner}")

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
    """``op``'s events stamped with their seqs (after its expected seq) and ``now``; an event
    that carries its seq and a time already (the worker's drive stamps what it buffers) is kept
    as it is."""
    seq = op.expected_seq
    out: list[AnyEvent] = []
    for event in op.events:
        seq += 1
        out.append(event if event.seq == seq and event.at else codec.stamp(event, seq, now))
    return out


def _cancel_mark(events: Sequence[AnyEvent]) -> int:
    """What an append does to its execution's place in the cancel set: 2 removes it (the
    execution ends), 1 adds it (a cancel request), 0 leaves it."""
    if any(is_terminal(e) for e in events):
        return 2
    return 1 if any(isinstance(e, ExecutionCancelRequested) for e in events) else 0


def _packed(
    op: AppendOp, events: list[AnyEvent], moves: Sequence[Move], records: Sequence[Record]
) -> list[bytes | str]:
    """One op of an APPEND_BATCH call as its arguments: a header of words (numbers, ids, charge
    ids, record keys), then the payloads, one argument each (the blobs, the encoded events, the
    records' values: Lua reads an argument without copying it, where cutting a payload out of a
    bigger one hashed its bytes twice). A word must be non-empty and hold no whitespace:
    ValueError otherwise (nothing is sent)."""
    words = [str(op.expected_seq), str(op.expire_ms), op.ack or "-", op.execution_id]
    words += (str(_cancel_mark(events)), op.owner or "-", str(len(op.blobs)), str(len(events)))
    words += (str(len(moves)), str(len(records)))
    payloads: list[bytes | str] = []
    for sha256, data in op.blobs:
        words.append(sha256)
        payloads.append(data)
    payloads += [codec.encode(event) for event in events]
    for move in moves:
        words += (move.kind, move.charge_id, str(move.amount), str(move.uncovered))
    for record in records:
        words += (record.key, record.member, str(len(record.indexes)), *record.indexes)
        payloads.append(record.value)
    header = " ".join(words)
    if len(header.split()) != len(words):
        raise ValueError(f"{op.execution_id}: an empty id, key or member, or one with a space")
    return [header, *payloads]


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
# The execution stream, the owner's balance and ledger and the blobs are named from their
# prefixes (engine.log.keys: every one carries the partition's hash tag, so they are in the slot
# of the keys declared, as in leases.DISPATCH); a record's keys are words of its op, checked by
# EventLog._checked_records to carry that tag too.
# KEYS[1] partition log  KEYS[2] partition's applied charges  KEYS[3] work stream
# KEYS[4] running counts  KEYS[5] cancel set
# ARGV[1] group  ARGV[2] now ms  ARGV[3] execution-stream prefix  ARGV[4] balance prefix
# ARGV[5] ledger prefix  ARGV[6] blob prefix  ARGV[7..] per op (_packed): a header of words
# separated by one space — expected seq, PEXPIRE ms (0: none), lease to release ('-': none),
# execution id, cancel mark (1 add, 2 remove, 0 none), owner ('-': none), n blobs, n events,
# n moves, n records, then per blob its sha256, per move its kind, charge id, signed amount
# (micro-coins) and uncovered amount, per record its key, its index member, n index keys and the
# index keys — then its payloads, one arg each: the blobs, the events, the records' values.
# Payloads are never cut out of a bigger arg: Lua hashes every byte of each string it makes.
# -> per op four numbers: 1, new seq, 0, 0 (written) | 0, current seq, 0, 0 (conflict) |
#    2, current seq, n, balance (the op's n-th move would take the balance below zero)
APPEND_BATCH = (
    END_LEASE
    + """
local log, charges, cancels, now = KEYS[1], KEYS[2], KEYS[5], ARGV[2]
local out = {}
local o = 7
while o <= #ARGV do
  local w = {}
  for word in string.gmatch(ARGV[o], '%S+') do w[#w + 1] = word end
  local expected, ttl, ack, xid = tonumber(w[1]), tonumber(w[2]), w[3], w[4]
  local mark, owner = w[5], w[6]
  local blobs, events = tonumber(w[7]), tonumber(w[8])
  local moves, records = tonumber(w[9]), tonumber(w[10])
  local stream = ARGV[3] .. xid
  local balance_key, ledger_key = ARGV[4] .. owner, ARGV[5] .. owner
  local wb = 11
  local wm = wb + blobs
  local wr = wm + 4 * moves
  local pb = o + 1  -- its payloads: the blobs, then the events, then the records' values
  local pe = pb + blobs
  local pr = pe + events
  o = pr + records
  -- Its entries are seq 1-0, 2-0, ... and none is ever deleted: its length is its newest seq.
  local current = redis.call('XLEN', stream)
  local status, refused, available = 1, 0, 0
  if current ~= expected then
    status = 0
  elseif moves > 0 then
    local balance = tonumber(redis.call('GET', balance_key) or '0')
    -- A balance that covers every taking of the op even if none were applied yet refuses none;
    -- otherwise each charge id is looked up, in order (an applied one moves nothing again).
    local worst = balance
    for j = 0, moves - 1 do
      local amount = tonumber(w[wm + 4 * j + 2])
      if amount < 0 then worst = worst + amount end
    end
    if worst < 0 then
      for j = 0, moves - 1 do
        if redis.call('HEXISTS', charges, w[wm + 4 * j + 1]) == 0 then
          local after = balance + tonumber(w[wm + 4 * j + 2])
          if after < 0 then
            status, refused, available = 2, j + 1, balance
            break
          end
          balance = after
        end
      end
    end
  end
  if status == 1 then
    for i = 0, blobs - 1 do
      redis.call('SET', ARGV[6] .. w[wb + i], ARGV[pb + i], 'NX')
    end
    for j = 0, moves - 1 do
      local kind, id = w[wm + 4 * j], w[wm + 4 * j + 1]
      local amount, uncovered = w[wm + 4 * j + 2], w[wm + 4 * j + 3]
      if redis.call('HSETNX', charges, id, amount) == 1 then
        -- '%d': Lua's tostring of a large number would print 1e+14; exact below 2^53, and a
        -- balance stays within engine.money.accounts.MAX_MICRO (10^15) of zero.
        local balance = string.format('%d', redis.call('INCRBY', balance_key, amount))
        if uncovered == '0' then
          redis.call('XADD', ledger_key, '*', 'charge_id', id, 'kind', kind, 'amount', amount,
            'balance', balance, 'execution_id', xid, 'at', now)
        else
          redis.call('XADD', ledger_key, '*', 'charge_id', id, 'kind', kind, 'amount', amount,
            'balance', balance, 'execution_id', xid, 'at', now, 'uncovered', uncovered)
        end
      end
    end
    local r = wr
    for j = 0, records - 1 do
      local key, member, n = w[r], w[r + 1], tonumber(w[r + 2])
      if redis.call('SET', key, ARGV[pr + j], 'NX') then
        for i = 1, n do redis.call('ZADD', w[r + 2 + i], 0, member) end
      end
      r = r + 3 + n
    end
    for i = 1, events do
      local payload = ARGV[pe + i - 1]
      redis.call('XADD', stream, (expected + i) .. '-0', 'e', payload)
      redis.call('XADD', log, '*', 'e', payload)
    end
    if ttl > 0 then redis.call('PEXPIRE', stream, ttl) end
    if ack ~= '-' then release(KEYS[3], KEYS[4], ARGV[1], ack) end
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
end
return out
"""
)
