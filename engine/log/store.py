"""The event store: the only module that issues stream commands.

Topology (see engine.log.keys): each execution has its own stream whose entry ids are ``{seq}-0``,
and every event appended to it is appended, in the same script, to its partition's log. Workers
read the partition logs through the consumer group ``workers`` (the entries only inform them);
projectors read them by range from their own checkpoints.

Dispatch (docs/decisions/0002): accepting a request also puts the execution at the end of its
owner's ready list, and the owner in its partition's ring. ``dispatch`` leases executions owners
in turn, skipping owners whose leased executions reached the per-owner cap, so neither the depth
of one owner's backlog nor the number of workers decides when another owner's execution starts.

A worker's *lease* on an execution is the pending-entries-list (PEL) entry of the execution's
entry in the partition's work stream (decision 0001, moved off the log by 0002): the worker renews
it by resetting its idle time (``renew``), another worker takes it over once it has been idle
longer than the lease (``claim_expired``, XAUTOCLAIM), and its delivery count is the lease
*epoch*. The lease is also the owner's cap slot: it is counted while pending and given back
when the terminal append (or ``release``, or a dead letter) ends it, so a crash never leaks one.
A stale worker's late write is refused by the expected-version append, never duplicated.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, cast

from redis.exceptions import NoScriptError, RedisError, ResponseError

from engine.clock import now_ms
from engine.connection import RedisClient, as_str
from engine.errors import (
    BalanceRefused,
    ConcurrencyConflict,
    ConfigError,
    IdempotencyMismatch,
    InsufficientBalance,
    StoreError,
    StoreUnavailable,
)
from engine.log import codec, scripts
from engine.log.events import MONEY_EVENTS, AnyEvent, ExecutionRequested
from engine.log.ids import execution_partition
from engine.log.keys import WORKER_GROUP, Keys
from engine.settings import Settings

IDEMPOTENCY_TTL_S = 24 * 3600


@dataclass(frozen=True, slots=True)
class Entry:
    """One partition-log entry: its stream id and its event (None when it cannot be decoded)."""

    entry_id: str
    event: AnyEvent | None
    raw: bytes
    deliveries: int = 1


# Every event is encoded with its tag first (msgspec writes the tag field before the others), so
# an entry's type can be read from its first bytes without decoding the rest.
_TAG_PREFIX = b'{"type":"'


@dataclass(frozen=True, slots=True)
class RawEntry:
    """A partition-log entry as delivered, not decoded yet: a consumer that only acknowledges
    most entries decodes just the few it acts on."""

    entry_id: str
    raw: bytes
    deliveries: int = 1

    @property
    def event_type(self) -> str | None:
        """The event's tag read from the encoded prefix (None when the entry has another shape:
        only :meth:`decode` can tell what it is then)."""
        raw = self.raw
        if not raw.startswith(_TAG_PREFIX):
            return None
        end = raw.find(b'"', len(_TAG_PREFIX))
        return raw[len(_TAG_PREFIX) : end].decode("ascii", "replace") if end > 0 else None

    def decode(self) -> Entry:
        """The entry with its event decoded (None when it cannot be)."""
        try:
            event: AnyEvent | None = codec.decode(self.raw)
        except StoreError:
            event = None
        return Entry(self.entry_id, event, self.raw, self.deliveries)


class Move(NamedTuple):
    """One balance movement of an append, computed by engine.money.billing: the ``event_index``-th
    event of the append stands for it; ``amount`` is signed (negative takes from the balance)."""

    event_index: int
    kind: str
    charge_id: str
    amount: int
    uncovered: int = 0


class AppendOp(NamedTuple):
    """One execution's expected-seq append inside :meth:`EventStore.append_many`.

    ``blobs`` are ``(sha256, data)`` pairs stored (SET NX, in the execution's partition) before
    the events, so an event never names a blob that is not stored. ``ack`` is the execution's
    lease (its work-stream entry id): released atomically with a successful append (the terminal
    one), never after a conflict. ``moves`` are the balance movements of the money events among
    ``events`` (engine.money.billing.moves_of), one per money event: they, their ledger entries
    and their applied charge ids are written by the same script, or nothing is. ``owner`` is the
    execution's owner, needed when there are moves.
    """

    execution_id: str
    expected_seq: int
    events: Sequence[AnyEvent]
    expire_ms: int = 0
    blobs: Sequence[tuple[str, bytes]] = ()
    ack: str | None = None
    owner: str | None = None
    moves: Sequence[Move] = ()


RefusalReason = Literal["running", "seen", "moved"]


@dataclass(frozen=True, slots=True)
class Refused:
    """A guarded request that appended nothing and charged nothing: ``running`` (``holder`` is
    the execution id of the schedule's run in flight), ``seen`` (``holder`` is what a run recorded
    for the video) or ``moved`` (what the caller read changed meanwhile: read again)."""

    reason: RefusalReason
    holder: str = ""


# What append_many answers for one AppendOp: the events stamped, or why they were not written.
AppendResult = list[AnyEvent] | ConcurrencyConflict | BalanceRefused | StoreUnavailable


@dataclass(frozen=True, slots=True)
class Lease:
    """An execution :meth:`EventStore.dispatch` leased: ``entry`` is its work-stream entry (the
    lease id, the ExecutionRequested, delivery 1) and ``history`` its events so far."""

    entry: Entry
    history: list[AnyEvent]


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to :meth:`EventStore.request`."""

    execution_id: str
    duplicate: bool
    balance: int | None = None
    # The appended event (None for a duplicate): callers answer from it without reading back.
    event: ExecutionRequested | None = None


def _checked_moves(op: AppendOp) -> Sequence[Move]:
    """``op.moves``, after checking that they name exactly the money events of ``op.events``, in
    order: a money event appended without its move would be in the log but not in the balance."""
    money = [i for i, e in enumerate(op.events) if isinstance(e, MONEY_EVENTS)]
    if [m.event_index for m in op.moves] != money:
        raise ValueError(
            f"{op.execution_id}: the moves do not match the money events of the append"
        )
    return op.moves


class EventStore:
    """Append, read and lease operations over one deployment's streams."""

    def __init__(self, redis: RedisClient, settings: Settings) -> None:
        self.redis = redis
        self.settings = settings
        self.keys = Keys(settings.prefix, settings.partitions)
        self._append_batch = redis.register_script(scripts.APPEND_BATCH)
        self._request = redis.register_script(scripts.REQUEST)
        self._request_run = redis.register_script(scripts.REQUEST_RUN)
        self._request_once = redis.register_script(scripts.REQUEST_ONCE)
        self._touch = redis.register_script(scripts.TOUCH)
        self._claim = redis.register_script(scripts.CLAIM)
        self._dead_letter = redis.register_script(scripts.DEAD_LETTER)
        self._dispatch = redis.register_script(scripts.DISPATCH)
        self._release = redis.register_script(scripts.RELEASE)

    # -- setup ------------------------------------------------------------------------------------
    async def open(self) -> None:
        """Record (or read back) the partition count and create the worker group on every log
        and work stream.

        The partition count is fixed when the store is first created; a process configured with
        another explicit count refuses to start rather than route owners to the wrong partition.
        """
        try:
            await self.redis.hsetnx(self.keys.meta, "partitions", self.settings.partitions)
            stored = int(await self.redis.hget(self.keys.meta, "partitions") or 0)
        except RedisError as exc:
            raise StoreUnavailable(f"cannot reach Redis: {exc}") from exc
        if stored != self.settings.partitions:
            if self.settings.partitions_explicit:
                raise ConfigError(
                    f"CLIPSTREAM_PARTITIONS={self.settings.partitions} but this store was "
                    f"created with {stored} partitions; the count cannot change"
                )
            self.keys = Keys(self.settings.prefix, stored)
        for p in range(self.keys.partitions):
            for stream in (self.keys.log(p), self.keys.work(p)):
                try:
                    await self.redis.xgroup_create(stream, WORKER_GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise StoreError(str(exc)) from exc

    @property
    def partitions(self) -> range:
        return range(self.keys.partitions)

    # -- writes -----------------------------------------------------------------------------------
    async def request(
        self,
        event: ExecutionRequested,
        *,
        idempotency: tuple[str, str] | None = None,
    ) -> Accepted:
        """Charge the flat fee, append ``ExecutionRequested`` as seq 1 and queue the execution in
        its owner's ready list, atomically.

        ``idempotency`` is ``(key_digest, body_fingerprint)``: a repeat with the same fingerprint
        within 24 h returns the first execution and charges nothing; another fingerprint raises
        IdempotencyMismatch. InsufficientBalance when the balance cannot cover ``event.fee``.
        """
        event, keys, args = self._request_call(event, idempotency)
        result, replicated = await self._run_request(self._request, scripts.REQUEST, keys, args)
        return self._accepted(event, result, replicated)

    async def request_run(
        self,
        event: ExecutionRequested,
        *,
        idempotency: tuple[str, str] | None,
        schedule_key: str,
        schedule_raw: bytes,
        current_run: str | None,
        live: bool,
    ) -> Accepted | Refused:
        """:meth:`request` for a schedule run (``event.schedule_id``), one run at a time.

        The caller read the schedule record (``schedule_raw`` under ``schedule_key``) and the
        schedule's run marker (``current_run``, the execution id of its latest run) and folded that
        run's history (``live``: not terminal yet). Refused ``running`` while it is live, ``moved``
        when the record or the marker changed since (read again); otherwise as :meth:`request`, and
        the marker names the new run, atomically (scripts.REQUEST_RUN).
        """
        schedule_id = event.schedule_id
        if schedule_id is None:
            raise ValueError(f"{event.execution_id} is not a schedule run")
        event, keys, args = self._request_call(event, idempotency)
        head_keys = [
            self.keys.schedule_run(event.owner, schedule_id),
            self._idempotency_key(event.owner, idempotency),
            schedule_key,
        ]
        head_args: list[Any] = [
            current_run or "",
            "1" if live else "0",
            event.execution_id,
            "1" if idempotency else "0",
            schedule_raw,
        ]
        return await self._claimed(
            self._request_run, scripts.REQUEST_RUN, event, head_keys + keys, head_args + args
        )

    async def request_once(
        self,
        event: ExecutionRequested,
        *,
        idempotency: tuple[str, str] | None,
        seen_key: str,
        seen_field: str,
        seen_value: str,
    ) -> Accepted | Refused:
        """:meth:`request` unless ``seen_field`` is already in the hash ``seen_key`` (Refused
        ``seen`` with what it holds); a request it lets through records ``seen_value`` there,
        atomically (scripts.REQUEST_ONCE). A repeated Idempotency-Key answers as :meth:`request`."""
        event, keys, args = self._request_call(event, idempotency)
        head_keys = [seen_key, self._idempotency_key(event.owner, idempotency)]
        head_args: list[Any] = [seen_field, seen_value, "1" if idempotency else "0"]
        return await self._claimed(
            self._request_once, scripts.REQUEST_ONCE, event, head_keys + keys, head_args + args
        )

    def _request_call(
        self, event: ExecutionRequested, idempotency: tuple[str, str] | None
    ) -> tuple[ExecutionRequested, list[str], list[Any]]:
        """``event`` stamped as seq 1, and the KEYS and ARGV of scripts.REQUEST for it."""
        stamped = codec.stamp(event, 1)
        assert isinstance(stamped, ExecutionRequested)
        event = stamped
        _, fingerprint = idempotency or ("-", "")
        keys = [
            self.keys.execution(event.execution_id),
            self._log_of(event.execution_id),
            self.keys.balance(event.owner),
            self.keys.ledger(event.owner),
            self._idempotency_key(event.owner, idempotency),
            self.keys.ready(event.owner),
            self.keys.ring(self.keys.partition(event.owner)),
        ]
        args: list[Any] = [
            event.fee,
            codec.encode(event),
            "1" if idempotency else "0",
            fingerprint,
            IDEMPOTENCY_TTL_S,
            event.execution_id,
            event.at,
            event.owner,
        ]
        return event, keys, args

    def _idempotency_key(self, owner: str, idempotency: tuple[str, str] | None) -> str:
        return self.keys.idempotency(owner, idempotency[0] if idempotency else "-")

    async def _run_request(
        self, script: Any, text: str, keys: list[str], args: list[Any]
    ) -> tuple[Any, int]:
        """Run a request script: (reply, replicas that confirmed it, when WAIT is configured)."""
        if self.settings.wait_replicas > 0:
            return await self._run_and_wait(text, keys, args)
        return await self._run(script, keys, args), 0

    async def _claimed(
        self, script: Any, text: str, event: ExecutionRequested, keys: list[str], args: list[Any]
    ) -> Accepted | Refused:
        result, replicated = await self._run_request(script, text, keys, args)
        status = as_str(result[0])
        if status in ("running", "seen", "moved"):
            return Refused(cast(RefusalReason, status), as_str(result[1]))
        return self._accepted(event, result, replicated)

    def _accepted(self, event: ExecutionRequested, result: Any, replicated: int) -> Accepted:
        """The answer of a request script (scripts.REQUEST) as Accepted, or its error raised."""
        status = as_str(result[0])
        if status == "ok":
            self._check_replicas(replicated)
            return Accepted(
                event.execution_id, duplicate=False, balance=int(result[2]), event=event
            )
        if status == "duplicate":
            return Accepted(as_str(result[1]), duplicate=True)
        if status == "mismatch":
            raise IdempotencyMismatch("this Idempotency-Key was used with a different request body")
        if status == "insufficient":
            raise InsufficientBalance("the balance cannot cover the fee")
        raise StoreError(f"execution {event.execution_id} already exists")

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
        stamped = self._stamp(op, now)
        keys, args = self._batch_call(execution_partition(execution_id), [(op, stamped)], now)
        result = self._result(op, stamped, await self._run(self._append_batch, keys, args), 0)
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
        stamped = [self._stamp(op, now) for op in ops]
        by_partition: dict[int, list[int]] = {}
        for i, op in enumerate(ops):
            by_partition.setdefault(execution_partition(op.execution_id), []).append(i)
        calls = [
            self._batch_call(partition, [(ops[i], stamped[i]) for i in members], now)
            for partition, members in by_partition.items()
        ]
        replies = await self._pipelined(self._append_batch, calls)
        results: list[AppendResult | None] = [None] * len(ops)
        for members, reply in zip(by_partition.values(), replies, strict=True):
            for n, i in enumerate(members):
                op = ops[i]
                if isinstance(reply, Exception):
                    results[i] = StoreUnavailable(f"append to {op.execution_id} failed: {reply}")
                else:
                    results[i] = self._result(op, stamped[i], reply, n)
        return [r for r in results if r is not None]

    @staticmethod
    def _stamp(op: AppendOp, now: int) -> list[AnyEvent]:
        return [codec.stamp(e, op.expected_seq + i, now) for i, e in enumerate(op.events, 1)]

    def _batch_call(
        self, partition: int, ops: Sequence[tuple[AppendOp, list[AnyEvent]]], now: int
    ) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of one APPEND_BATCH call for ``ops`` (op, its events stamped), all of
        ``partition``; ``now`` stamps the ledger entries."""
        keys = [
            self.keys.log(partition),
            self.keys.charges(partition),
            self.keys.work(partition),
            self.keys.running(partition),
        ]
        args: list[Any] = [WORKER_GROUP, now]
        for op, events in ops:
            moves = _checked_moves(op)
            keys.append(self.keys.execution(op.execution_id))
            if moves:
                keys += self._money_keys(op, partition)
            keys.extend(self.keys.blob(partition, sha256) for sha256, _ in op.blobs)
            args += (op.expected_seq, op.expire_ms, op.ack or "", len(op.blobs), len(events))
            args += (len(moves), op.execution_id)
            args.extend(data for _, data in op.blobs)
            args.extend(codec.encode(e) for e in events)
            for move in moves:
                args += (move.kind, move.charge_id, move.amount, move.uncovered)
        return keys, args

    def _money_keys(self, op: AppendOp, partition: int) -> list[str]:
        """The owner's balance and ledger, which must share the execution's slot."""
        if op.owner is None:
            raise ValueError(f"{op.execution_id}: an append with money events needs its owner")
        if self.keys.partition(op.owner) != partition:
            raise ValueError(f"{op.execution_id} is not in the partition of {op.owner}")
        return [self.keys.balance(op.owner), self.keys.ledger(op.owner)]

    @staticmethod
    def _result(op: AppendOp, stamped: list[AnyEvent], reply: Any, n: int) -> AppendResult:
        """The answer for the ``n``-th op of an APPEND_BATCH reply."""
        status, seq, refused, available = (int(x) for x in reply[4 * n : 4 * n + 4])
        if status == 1:
            return stamped
        if status == 0:
            return ConcurrencyConflict(op.execution_id, op.expected_seq, seq)
        return BalanceRefused(op.execution_id, op.moves[refused - 1].event_index, available)

    async def _pipelined(
        self, script: Any, calls: Sequence[tuple[list[str], list[Any]]]
    ) -> list[Any]:
        """Run ``script`` once per ``(keys, args)`` in one pipelined round trip: each call's reply,
        or the RedisError it failed with. StoreUnavailable when the round trip itself failed."""
        pipe = self.redis.pipeline(transaction=False)
        for keys, args in calls:
            # EVALSHA straight into the pipeline: redis-py's Script in a pipeline would first
            # ask SCRIPT EXISTS on every execute (one more round trip each time). A NOSCRIPT
            # answer (after a restart or SCRIPT FLUSH) is retried below through the Script.
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis pipeline failed: {exc}") from exc
        out: list[Any] = []
        for (keys, args), reply in zip(calls, replies, strict=True):
            if isinstance(reply, NoScriptError):
                try:
                    reply = await script(keys=keys, args=args)
                except RedisError as exc:
                    reply = exc
            out.append(reply)
        return out

    async def _run_and_wait(self, script: str, keys: list[str], args: list[Any]) -> tuple[Any, int]:
        """Run ``script``, then WAIT for replicas on the same connection; (reply, replicas).

        WAIT only covers the writes of the connection it is sent on, so the script and the WAIT
        go in one pipeline: redis-py runs a pipeline on one connection, and a cluster pipeline on
        one connection per node, with WAIT pinned to the node that owns the keys' slot (left to
        itself RedisCluster would send WAIT to every primary and add the answers up).
        """
        pipe = self.redis.pipeline(transaction=False)
        pipe.execute_command("EVAL", script, len(keys), *keys, *args)
        wait: list[Any] = ["WAIT", self.settings.wait_replicas, self.settings.wait_timeout_ms]
        if hasattr(self.redis, "get_node_from_key"):  # RedisCluster
            pipe.execute_command(*wait, target_nodes=self.redis.get_node_from_key(keys[0]))
        else:
            pipe.execute_command(*wait)
        try:
            reply, replicas = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(f"Redis script failed: {exc}") from exc
        return reply, int(replicas)

    def _check_replicas(self, replicated: int) -> None:
        n = self.settings.wait_replicas
        if replicated < n:
            raise StoreUnavailable(f"only {replicated} of {n} replicas confirmed the write")

    # -- reads ------------------------------------------------------------------------------------
    async def history(self, execution_id: str, after_seq: int = 0) -> list[AnyEvent]:
        """The execution's events after ``after_seq``, in order (empty when unknown)."""
        start = f"({after_seq}-0" if after_seq else "-"
        try:
            rows = await self.redis.xrange(self.keys.execution(execution_id), start, "+")
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [codec.decode(fields[codec.FIELD]) for _, fields in rows]

    async def histories(self, execution_ids: Sequence[str]) -> dict[str, list[AnyEvent]]:
        """Several executions' histories in one pipelined round trip."""
        if not execution_ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for xid in execution_ids:
            pipe.xrange(self.keys.execution(xid), "-", "+")
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
        try:
            rows = await self.redis.xrange(self.keys.log(partition), start, "+", count=count)
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [self._entry(entry_id, fields) for entry_id, fields in rows]

    async def log_length(self, partition: int) -> int:
        return int(await self.redis.xlen(self.keys.log(partition)))

    # -- the worker group on the logs: entries that inform workers --------------------------------
    async def read_group(
        self, partitions: Sequence[int], consumer: str, count: int
    ) -> dict[int, list[Entry]]:
        """New entries for ``consumer`` from each partition's log (non-blocking, one round trip)."""
        raw = await self.read_group_raw(partitions, consumer, count)
        return {p: [entry.decode() for entry in entries] for p, entries in raw.items()}

    async def read_group_raw(
        self, partitions: Sequence[int], consumer: str, count: int
    ) -> dict[int, list[RawEntry]]:
        """:meth:`read_group` without decoding: the consumer decodes what it needs."""
        pipe = self.redis.pipeline(transaction=False)
        for p in partitions:
            pipe.xreadgroup(WORKER_GROUP, consumer, {self.keys.log(p): ">"}, count=count)
        try:
            results = await pipe.execute()
        except RedisError as exc:
            raise StoreUnavailable(str(exc)) from exc
        out: dict[int, list[RawEntry]] = {}
        for p, reply in zip(partitions, results, strict=True):
            entries = [
                self._raw_entry(eid, fields) for _, rows in (reply or []) for eid, fields in rows
            ]
            if entries:
                out[p] = entries
        return out

    async def ack(self, partition: int, entry_ids: Sequence[str]) -> None:
        """Acknowledge entries of the worker group: they are done and will not be redelivered."""
        if entry_ids:
            await self.redis.xack(self.keys.log(partition), WORKER_GROUP, *entry_ids)

    async def ack_many(self, acks: dict[int, list[str]]) -> None:
        """Acknowledge entries of several partitions in one round trip."""
        acks = {p: ids for p, ids in acks.items() if ids}
        if not acks:
            return
        pipe = self.redis.pipeline(transaction=False)
        for p, ids in acks.items():
            pipe.xack(self.keys.log(p), WORKER_GROUP, *ids)
        await pipe.execute()

    async def reclaim_log(
        self, partition: int, consumer: str, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        """Take over log entries delivered to a reader that never acknowledged them (it died
        between a read and its batch of acks), so they are acted on and acknowledged after all."""
        return await self._claim_idle(self.keys.log(partition), consumer, min_idle_ms, count)

    # -- leases: the worker group on the work streams ---------------------------------------------
    async def dispatch(
        self, counts: Mapping[int, int], consumer: str, owner_cap: int = 0
    ) -> dict[int, list[Lease]]:
        """Lease up to ``counts[p]`` executions of each partition ``p`` to ``consumer``, one
        pipelined round trip: owners in turn, oldest first within an owner, skipping owners that
        hold ``owner_cap`` leases already (0: no cap). Partitions with nothing to lease are left
        out of the answer."""
        calls: list[tuple[list[str], list[Any]]] = []
        for p, n in counts.items():
            keys = [self.keys.ring(p), self.keys.work(p), self.keys.running(p)]
            args: list[Any] = [
                WORKER_GROUP,
                consumer,
                n,
                owner_cap,
                self.keys.ready_prefix(p),
                self.keys.execution_prefix(p),
            ]
            calls.append((keys, args))
        out: dict[int, list[Lease]] = {}
        for p, reply in zip(counts, await self._pipelined(self._dispatch, calls), strict=True):
            if isinstance(reply, Exception):
                raise StoreUnavailable(f"dispatch on partition {p} failed: {reply}")
            leases = [self._lease(entry_id, history) for entry_id, history in reply]
            if leases:
                out[p] = leases
        return out

    async def queued(self, partition: int) -> int:
        """Executions of ``partition`` waiting for a lease (the ready lists of its ring)."""
        owners = await self.redis.lrange(self.keys.ring(partition), 0, -1)
        if not owners:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for owner in owners:
            pipe.llen(self.keys.ready(as_str(owner)))
        return sum(int(n) for n in await pipe.execute())

    async def leased(self, partition: int) -> dict[str, int]:
        """Executions leased right now in ``partition``, by owner (what the cap counts)."""
        counts = await self.redis.hgetall(self.keys.running(partition))
        return {as_str(owner): int(n) for owner, n in counts.items()}

    async def renew(self, partition: int, consumer: str, entry_ids: Sequence[str]) -> list[bool]:
        """Renew the leases ``consumer`` still holds; False for each one lost to a takeover."""
        return await self._touch_leases(partition, consumer, entry_ids, idle_ms=0)

    async def hand_back(self, partition: int, consumer: str, entry_ids: Sequence[str]) -> None:
        """Give leases up early (graceful shutdown): the next claim by any worker takes them."""
        await self._touch_leases(
            partition, consumer, entry_ids, idle_ms=10 * self.settings.lease_ms
        )

    async def _touch_leases(
        self, partition: int, consumer: str, entry_ids: Sequence[str], idle_ms: int
    ) -> list[bool]:
        if not entry_ids:
            return []
        keys = [self.keys.work(partition)]
        args: list[Any] = [WORKER_GROUP, consumer, idle_ms, *entry_ids]
        return [int(x) == 1 for x in await self._run(self._touch, keys, args)]

    async def claim_expired(
        self, partition: int, consumer: str, min_idle_ms: int, count: int = 100
    ) -> list[Entry]:
        """Take over every lease of ``partition`` idle longer than ``min_idle_ms``.

        Each returned Entry is the lease's ExecutionRequested with its delivery count (the lease
        epoch, bumped by this takeover).
        """
        return await self._claim_idle(self.keys.work(partition), consumer, min_idle_ms, count)

    async def release(self, partition: int, entry_ids: Sequence[str]) -> None:
        """End leases whose execution needs nothing more, giving their owners' slots back."""
        await self.release_many({partition: list(entry_ids)})

    async def release_many(self, leases: Mapping[int, Sequence[str]]) -> None:
        """:meth:`release` for several partitions in one round trip."""
        calls = [
            ([self.keys.work(p), self.keys.running(p)], [WORKER_GROUP, *ids])
            for p, ids in leases.items()
            if ids
        ]
        if not calls:
            return
        for reply in await self._pipelined(self._release, calls):
            if isinstance(reply, Exception):
                raise StoreUnavailable(f"release failed: {reply}")

    async def _claim_idle(
        self, stream: str, consumer: str, min_idle_ms: int, count: int
    ) -> list[Entry]:
        keys = [stream]
        cursor = "0-0"
        claimed: list[Entry] = []
        while True:
            args: list[Any] = [WORKER_GROUP, consumer, min_idle_ms, cursor, count]
            reply = await self._run(self._claim, keys, args)
            cursor = as_str(reply[0])
            for entry_id, flat, deliveries in reply[1]:
                fields = dict(zip(flat[::2], flat[1::2], strict=True))
                claimed.append(self._entry(entry_id, fields, int(deliveries)))
            if cursor == "0-0":
                return claimed

    async def dead_letter(self, partition: int, entry: Entry, reason: str) -> None:
        """Move log entry ``entry`` to the partition's dead-letter stream and acknowledge it,
        atomically."""
        await self._dead_letter_in(
            [self.keys.log(partition), self.keys.dead(partition)], entry, reason
        )

    async def dead_letter_lease(self, partition: int, entry: Entry, reason: str) -> None:
        """Move lease ``entry`` (its ExecutionRequested) to the partition's dead-letter stream and
        release it, atomically."""
        keys = [self.keys.work(partition), self.keys.dead(partition), self.keys.running(partition)]
        await self._dead_letter_in(keys, entry, reason)

    async def _dead_letter_in(self, keys: list[str], entry: Entry, reason: str) -> None:
        args: list[Any] = [
            WORKER_GROUP,
            entry.entry_id,
            reason,
            entry.raw,
            entry.deliveries,
            now_ms(),
        ]
        await self._run(self._dead_letter, keys, args)

    async def dead_letters(self, partition: int, count: int = 100) -> list[dict[str, str]]:
        """The newest dead-lettered entries of ``partition``, oldest first."""
        rows = await self.redis.xrevrange(self.keys.dead(partition), "+", "-", count=count)
        # A poison payload need not be UTF-8 (that may be why it was dead-lettered): listing it
        # must not fail, so undecodable bytes are shown as U+FFFD.
        return [
            {
                "dead_id": as_str(eid),
                **{as_str(k): as_str(v, errors="replace") for k, v in fields.items()},
            }
            for eid, fields in reversed(rows)
        ]

    # -- blobs ------------------------------------------------------------------------------------
    async def put_blob(self, partition: int, sha256: str, data: bytes) -> None:
        """Store a large output once under its content hash (a second put is a no-op)."""
        await self.redis.set(self.keys.blob(partition, sha256), data, nx=True)

    async def get_blob(self, partition: int, sha256: str) -> bytes | None:
        data = await self.redis.get(self.keys.blob(partition, sha256))
        return bytes(data) if data is not None else None

    # -- helpers ----------------------------------------------------------------------------------
    def _log_of(self, execution_id: str) -> str:
        return self.keys.log(execution_partition(execution_id))

    @staticmethod
    def _raw_entry(entry_id: bytes | str, fields: dict[Any, Any], deliveries: int = 1) -> RawEntry:
        value = fields.get(codec.FIELD) or fields.get("e") or b""
        raw = value.encode() if isinstance(value, str) else bytes(value)
        return RawEntry(as_str(entry_id), raw, deliveries)

    @classmethod
    def _entry(cls, entry_id: bytes | str, fields: dict[Any, Any], deliveries: int = 1) -> Entry:
        return cls._raw_entry(entry_id, fields, deliveries).decode()

    @staticmethod
    def _lease(entry_id: bytes | str, history: list[bytes]) -> Lease:
        events = [codec.decode(raw) for raw in history]
        return Lease(Entry(as_str(entry_id), events[0], bytes(history[0])), events)

    @staticmethod
    async def _run(script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except RedisError as exc:
            raise StoreUnavailable(f"Redis script failed: {exc}") from exc
