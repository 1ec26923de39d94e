"""Admission: accepting a request for an execution, all or nothing.

Accepting a request charges the flat fee (with its ledger entry), appends ``ExecutionRequested``
as seq 1 and queues the execution in its owner's ready list, where engine.log.leases dispatches
it; an Idempotency-Key makes a repeat answer with the first execution and charge nothing. Two
guarded forms serve schedules: one run at a time per schedule (:meth:`Admission.request_run`),
and each video once per schedule (:meth:`Admission.request_once`). With ``wait_replicas`` set, an
acceptance is answered only once that many replicas confirmed it. The Lua scripts are at the end
of this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

from engine import meters
from engine.connection import as_str
from engine.errors import IdempotencyMismatch, InsufficientBalance, StoreError
from engine.log import codec
from engine.log.context import StoreContext
from engine.log.events import ExecutionRequested
from engine.log.ids import execution_partition
from engine.settings import coins_text

IDEMPOTENCY_TTL_S = 24 * 3600

RefusalReason = Literal["running", "seen", "moved"]


@dataclass(frozen=True, slots=True)
class Accepted:
    """The answer to :meth:`Admission.request`."""

    execution_id: str
    duplicate: bool
    balance: int | None = None
    # The appended event (None for a duplicate): callers answer from it without reading back.
    event: ExecutionRequested | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    """A guarded request that appended nothing and charged nothing: ``running`` (``holder`` is
    the execution id of the schedule's run in flight), ``seen`` (``holder`` is what a run recorded
    for the video) or ``moved`` (what the caller read changed meanwhile: read again)."""

    reason: RefusalReason
    holder: str = ""


class Admission:
    """Requests for executions: fee, idempotency, the first append and the ready list."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx
        self._request = ctx.script(REQUEST)
        self._request_run = ctx.script(REQUEST_RUN)
        self._request_once = ctx.script(REQUEST_ONCE)

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
        result, replicated = await self._run(self._request, REQUEST, keys, args)
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
        the marker names the new run, atomically (:data:`REQUEST_RUN`).
        """
        schedule_id = event.schedule_id
        if schedule_id is None:
            raise ValueError(f"{event.execution_id} is not a schedule run")
        event, keys, args = self._request_call(event, idempotency)
        head_keys = [
            self._ctx.keys.schedule_run(event.owner, schedule_id),
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
        return await self._guarded(
            self._request_run, REQUEST_RUN, event, head_keys + keys, head_args + args
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
        atomically (:data:`REQUEST_ONCE`). A repeated Idempotency-Key answers as :meth:`request`."""
        event, keys, args = self._request_call(event, idempotency)
        head_keys = [seen_key, self._idempotency_key(event.owner, idempotency)]
        head_args: list[Any] = [seen_field, seen_value, "1" if idempotency else "0"]
        return await self._guarded(
            self._request_once, REQUEST_ONCE, event, head_keys + keys, head_args + args
        )

    def _request_call(
        self, event: ExecutionRequested, idempotency: tuple[str, str] | None
    ) -> tuple[ExecutionRequested, list[str], list[Any]]:
        """``event`` stamped as seq 1, and the KEYS and ARGV of :data:`REQUEST` for it."""
        stamped = codec.stamp(event, 1)
        assert isinstance(stamped, ExecutionRequested)
        event = stamped
        _, fingerprint = idempotency or ("-", "")
        k = self._ctx.keys
        keys = [
            k.execution(event.execution_id),
            k.log(execution_partition(event.execution_id)),
            k.balance(event.owner),
            k.ledger(event.owner),
            self._idempotency_key(event.owner, idempotency),
            k.ready(event.owner),
            k.ring(k.partition(event.owner)),
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
        return self._ctx.keys.idempotency(owner, idempotency[0] if idempotency else "-")

    async def _run(
        self, script: Any, text: str, keys: list[str], args: list[Any]
    ) -> tuple[Any, int]:
        """Run a request script: (reply, replicas that confirmed it, when WAIT is configured)."""
        if self._ctx.settings.wait_replicas > 0:
            return await self._ctx.run_and_wait(text, keys, args)
        return await self._ctx.run(script, keys, args), 0

    async def _guarded(
        self, script: Any, text: str, event: ExecutionRequested, keys: list[str], args: list[Any]
    ) -> Accepted | Refused:
        """Run a guarded request script: Refused, or the answer of :meth:`_accepted`."""
        result, replicated = await self._run(script, text, keys, args)
        status = as_str(result[0])
        if status in ("running", "seen", "moved"):
            return Refused(cast(RefusalReason, status), as_str(result[1]))
        return self._accepted(event, result, replicated)

    def _accepted(self, event: ExecutionRequested, result: Any, replicated: int) -> Accepted:
        """The answer of a request script (:data:`REQUEST`) as Accepted, or its error raised."""
        status = as_str(result[0])
        if status == "ok":
            self._ctx.check_replicas(replicated)
            meters.EXECUTIONS_ACCEPTED.labels(event.kind).inc()
            meters.COINS_CHARGED.labels("fee").inc(meters.coins(event.fee))
            return Accepted(
                event.execution_id, duplicate=False, balance=int(result[2]), event=event
            )
        if status == "duplicate":
            return Accepted(as_str(result[1]), duplicate=True)
        if status == "mismatch":
            raise IdempotencyMismatch("this Idempotency-Key was used with a different request body")
        if status == "insufficient":
            raise InsufficientBalance(
                f"the balance cannot cover the fee ({coins_text(event.fee)} coins): top up"
            )
        raise StoreError(f"execution {event.execution_id} already exists")


# -- the scripts ----------------------------------------------------------------------------------
# Each touches keys of one hash slot only (cluster-safe).

# Accept a request: idempotency check, flat fee, ledger entry, the ExecutionRequested append and
# its place in the owner's ready list (the owner joins the ring when the list was empty), all or
# nothing.
# KEYS[1] execution stream  KEYS[2] partition log  KEYS[3] balance  KEYS[4] ledger
# KEYS[5] idempotency record  KEYS[6] the owner's ready list  KEYS[7] the partition's ring
# ARGV[1] fee  ARGV[2] encoded ExecutionRequested  ARGV[3] '1' when an Idempotency-Key was given
# ARGV[4] request fingerprint  ARGV[5] idempotency ttl s  ARGV[6] execution id  ARGV[7] now ms
# ARGV[8] owner
# -> {'ok', log_id, balance} | {'duplicate', execution_id} | {'mismatch', execution_id}
#    | {'insufficient', balance} | {'exists', ''}
REQUEST = """
if ARGV[3] == '1' then
  local prev = redis.call('GET', KEYS[5])
  if prev then
    local sep = string.find(prev, '|', 1, true)
    local fingerprint = string.sub(prev, 1, sep - 1)
    local xid = string.sub(prev, sep + 1)
    if fingerprint == ARGV[4] then return {'duplicate', xid} end
    return {'mismatch', xid}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists', ''} end
local fee = tonumber(ARGV[1])
local balance = tonumber(redis.call('GET', KEYS[3]) or '0')
if balance < fee then return {'insufficient', string.format('%d', balance)} end
if fee > 0 then
  balance = redis.call('DECRBY', KEYS[3], fee)
  redis.call('XADD', KEYS[4], '*', 'charge_id', 'fee:' .. ARGV[6], 'kind', 'fee',
    'amount', string.format('%d', -fee), 'balance', string.format('%d', balance),
    'execution_id', ARGV[6], 'at', ARGV[7])
end
redis.call('XADD', KEYS[1], '1-0', 'e', ARGV[2])
local log_id = redis.call('XADD', KEYS[2], '*', 'e', ARGV[2])
if redis.call('RPUSH', KEYS[6], ARGV[6]) == 1 then redis.call('RPUSH', KEYS[7], ARGV[8]) end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[5], ARGV[4] .. '|' .. ARGV[6], 'EX', tonumber(ARGV[5]))
end
return {'ok', log_id, string.format('%d', balance)}
"""


def _around_request(body: str) -> str:
    """A script that runs ``body`` with REQUEST callable as ``request(keys, argv)``, and
    ``from(t, i)`` for the tail of a table: REQUEST keeps its own KEYS and ARGV layout behind the
    wrapper's, so the two never have to agree on positions."""
    return (
        "local function request(KEYS, ARGV)\n"
        + REQUEST
        + "end\n"
        + "local function from(t, first)\n"
        + "  local out = {}\n"
        + "  for i = first, #t do out[#out + 1] = t[i] end\n"
        + "  return out\n"
        + "end\n"
        + body
    )


# REQUEST for a schedule run, one run at a time per schedule: only while the schedule record and its
# run marker are what the caller read (else 'moved': read again), and only when the run the marker
# names has ended (the caller folded its history: terminal is final, so that cannot go stale); the
# marker then names the new run, atomically with its ExecutionRequested. An Idempotency-Key already
# used answers as REQUEST does (duplicate or mismatch) whatever runs.
# KEYS[1] run marker  KEYS[2] idempotency record  KEYS[3] schedule record  KEYS[4..] REQUEST's
# ARGV[1] marker as read ('' none)  ARGV[2] '1' when that run is in flight
# ARGV[3] new execution id  ARGV[4] '1' when an Idempotency-Key was given
# ARGV[5] schedule record as read  ARGV[6..] REQUEST's
# -> REQUEST's reply | {'running', execution id of the run in flight} | {'moved', ''}
REQUEST_RUN = _around_request(
    """
local keys, argv = from(KEYS, 4), from(ARGV, 6)
if ARGV[4] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return request(keys, argv) end
if redis.call('GET', KEYS[3]) ~= ARGV[5] then return {'moved', ''} end
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return {'moved', ''} end
if ARGV[2] == '1' then return {'running', ARGV[1]} end
local reply = request(keys, argv)
if reply[1] == 'ok' then redis.call('SET', KEYS[1], ARGV[3]) end
return reply
"""
)

# REQUEST for one video of a schedule run: nothing when a run of the schedule already processed
# the video ('seen'); otherwise the video is recorded as processed atomically with its
# ExecutionRequested. An Idempotency-Key already used (the same run asking again) answers as
# REQUEST does.
# KEYS[1] the schedule's seen hash  KEYS[2] idempotency record  KEYS[3..] REQUEST's
# ARGV[1] video id  ARGV[2] what to record for it  ARGV[3] '1' when an Idempotency-Key was given
# ARGV[4..] REQUEST's
# -> REQUEST's reply | {'seen', what was recorded}
REQUEST_ONCE = _around_request(
    """
local keys, argv = from(KEYS, 3), from(ARGV, 4)
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[2]) == 1 then return request(keys, argv) end
local seen = redis.call('HGET', KEYS[1], ARGV[1])
if seen then return {'seen', seen} end
local reply = request(keys, argv)
if reply[1] == 'ok' then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return reply
"""
)
