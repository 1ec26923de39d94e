"""Provider cost passed through to the owner — reserve, settle, release — and the ledger audit.

The flat fee is charged with ``ExecutionRequested`` (engine.log.store.request). Provider cost moves
while the job runs, in three kinds of money event, each appended by the worker in the same
expected-seq append (one Lua script, one slot: scripts.APPEND_BATCH) that moves the balance and
writes the ledger entry:

    CostReserved  reserve:{execution}:{step}:{attempt}  -estimate  in the append of StepStarted
    CostReleased  release:{execution}:{step}:{attempt}  +estimate  when the attempt ends, however
    CostCharged   settle:{execution}:{step}:{attempt}   -actual    with StepCompleted

A completed attempt releases its whole reservation and is charged its actual cost in the same
append (release first, so the freed estimate pays for the actual cost). A failed, cancelled or
abandoned attempt (its worker died: the takeover's first append releases it) is charged nothing.

Why this is exact:
    * every charge id is recorded in the partition's applied-charges hash by the script that
      applies it, and a charge id already there never moves money again;
    * the money moves only when the events are appended, and the append is refused as a whole
      when the execution's seq is not the expected one: a stale worker moves nothing;
    * a reservation stays open exactly as long as the log says (engine.run.plan folds it), so it is
      released once, by whoever writes next.

The balance never goes negative. The script refuses a move that would take it below zero, and
the worker then rewrites what it appends:
    * a refused reservation: the step is not started (no provider call); a ``StepFailed`` with
      code ``insufficient_balance`` takes its place and the execution ends ``error`` (402), its
      open reservations released;
    * a refused settlement (the actual cost exceeded the estimate by more than the balance holds):
      the step did run, so the charge is capped at what the balance holds. ``CostCharged.amount``
      is what was taken (the balance ends at 0), ``uncovered`` the rest, which is written off and
      shown on the ledger entry (field ``uncovered``). The next step with a cost cannot reserve.

Ledger entries (``keys.ledger``): ``charge_id``, ``kind``, ``amount`` (signed micro-coins:
negative takes from the balance), ``balance`` (after), ``execution_id``, ``at``. Kinds: ``credit``
(engine.money.accounts), ``fee`` (the request), ``read`` (read fees), ``reserve``, ``settle``,
``release``. :func:`audit` recomputes an account from its ledger.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from engine.errors import NotFound, StoreUnavailable
from engine.log.events import AnyEvent, CostCharged, CostReleased, CostReserved
from engine.log.ids import is_id
from engine.log.store import Move

if TYPE_CHECKING:
    from engine.runtime import Runtime

RESERVE = "reserve"
SETTLE = "settle"
RELEASE = "release"
CREDIT = "credit"
# Kinds whose entries give to the balance; every other kind takes from it (fee, read, reserve,
# settle, and whatever kind a later change adds).
_GIVING = frozenset({CREDIT, RELEASE})
# Kinds whose charge ids the applied-charges hash must record (the fee is made idempotent by its
# execution stream instead, and read fees by their own scheme).
_RECORDED = frozenset({CREDIT, RESERVE, SETTLE, RELEASE})
_PAGE = 1_000


# -- charge ids and money events -----------------------------------------------------------------


def charge_id(kind: str, execution_id: str, step_index: int, attempt: int) -> str:
    """The charge id of a ``reserve``, ``settle`` or ``release`` of one attempt of one step."""
    return f"{kind}:{execution_id}:{step_index}:{attempt}"


def reservation(execution_id: str, step_index: int, attempt: int, amount: int) -> CostReserved:
    """The reservation of an attempt's estimated cost (``amount`` > 0)."""
    return CostReserved(
        execution_id=execution_id,
        charge_id=charge_id(RESERVE, execution_id, step_index, attempt),
        amount=amount,
        step_index=step_index,
        attempt=attempt,
    )


def settlement(execution_id: str, step_index: int, attempt: int, amount: int) -> CostCharged:
    """The charge of a completed attempt's actual cost."""
    return CostCharged(
        execution_id=execution_id,
        charge_id=charge_id(SETTLE, execution_id, step_index, attempt),
        amount=amount,
        step_index=step_index,
    )


def capped(charge: CostCharged, available: int) -> CostCharged:
    """``charge`` cut down to the ``available`` balance; the rest is recorded as uncovered."""
    taken = max(0, min(charge.amount, available))
    return CostCharged(
        execution_id=charge.execution_id,
        charge_id=charge.charge_id,
        amount=taken,
        step_index=charge.step_index,
        reason=charge.reason,
        uncovered=charge.uncovered + charge.amount - taken,
    )


def releases(held: Iterable[CostReserved], reason: str) -> list[CostReleased]:
    """The releases of the reservations ``held`` (what engine.run.plan lists as still open)."""
    return [
        CostReleased(
            execution_id=r.execution_id,
            charge_id=charge_id(RELEASE, r.execution_id, r.step_index, r.attempt),
            reservation=r.charge_id,
            amount=r.amount,
            step_index=r.step_index,
            attempt=r.attempt,
            reason=reason,
        )
        for r in held
    ]


def move_of(event: AnyEvent, index: int = 0) -> Move | None:
    """The balance movement a money event stands for, as the ``index``-th event of its append
    (None for every other event)."""
    match event:
        case CostReserved():
            return Move(index, RESERVE, event.charge_id, -event.amount)
        case CostCharged():
            return Move(index, SETTLE, event.charge_id, -event.amount, event.uncovered)
        case CostReleased():
            return Move(index, RELEASE, event.charge_id, event.amount)
    return None


def moves_of(events: Iterable[AnyEvent]) -> tuple[Move, ...]:
    """The balance movements of an append of ``events``, in order (what AppendOp.moves holds)."""
    return tuple(m for i, e in enumerate(events) if (m := move_of(e, i)) is not None)


# -- audit ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class Audit:
    """An account recomputed from its ledger. ``ok`` when ``problems`` is empty."""

    account_id: str
    balance: int  # as stored
    entries: int = 0
    totals: dict[str, int] = field(default_factory=dict)  # signed sum by kind
    credits: int = 0
    charges: int = 0  # what every taking entry took (positive)
    releases: int = 0
    held: dict[str, int] = field(default_factory=dict)  # open reservations: charge id -> amount
    uncovered: int = 0  # actual cost written off because the balance could not pay it
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def expected_balance(self) -> int:
        """credits - charges + releases."""
        return self.credits - self.charges + self.releases


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def _ledger(runtime: Runtime, account_id: str) -> list[dict[str, str]]:
    key = runtime.store.keys.ledger(account_id)
    rows: list[dict[str, str]] = []
    start = "-"
    while True:
        page = await runtime.redis.xrange(key, start, "+", count=_PAGE)
        rows.extend({_s(k): _s(v) for k, v in fields.items()} for _, fields in page)
        if len(page) < _PAGE:
            return rows
        start = f"({_s(page[-1][0])}"


async def _applied(runtime: Runtime, account_id: str, ids: list[str]) -> list[str | None]:
    keys = runtime.store.keys
    hash_key = keys.charges(keys.partition(account_id))
    out: list[str | None] = []
    for i in range(0, len(ids), _PAGE):
        values = await runtime.redis.hmget(hash_key, ids[i : i + _PAGE])
        out.extend(None if v is None else _s(v) for v in values)
    return out


async def audit(runtime: Runtime, account_id: str) -> Audit:
    """Recompute ``account_id`` from its ledger and check it.

    Checks: balance == credits - charges + releases; each entry's ``balance`` is the running sum
    of the amounts before it and never negative; no charge id twice; amounts have their kind's
    sign; each release gives back exactly its reservation; the applied-charges hash records every
    credit, reserve, settle and release with its amount. Open reservations (executions still
    running, or a dead worker's not yet taken over) are listed in ``held``: at a quiescent point,
    with every execution ended, there are none. NotFound for an unknown account.
    """
    if not is_id(account_id, "acc"):
        raise NotFound("no such account")
    keys = runtime.store.keys
    try:
        exists = await runtime.redis.exists(keys.account(account_id), keys.ledger(account_id))
        stored = int(await runtime.redis.get(keys.balance(account_id)) or 0)
        rows = await _ledger(runtime, account_id)
        applied = await _applied(runtime, account_id, [r.get("charge_id", "") for r in rows])
    except RedisError as exc:
        raise StoreUnavailable(f"cannot read the ledger: {exc}") from exc
    if not exists:
        raise NotFound("no such account")
    result = Audit(account_id=account_id, balance=stored, entries=len(rows))
    reserved: dict[str, int] = {}
    released: dict[str, int] = {}
    seen: set[str] = set()
    running = 0
    for row, recorded in zip(rows, applied, strict=True):
        _check_entry(result, row, recorded, running, seen)
        amount = int(row.get("amount", "0"))
        running += amount
        kind, cid = row.get("kind", ""), row.get("charge_id", "")
        result.totals[kind] = result.totals.get(kind, 0) + amount
        result.uncovered += int(row.get("uncovered", "0"))
        if kind == CREDIT:
            result.credits += amount
        elif kind == RELEASE:
            result.releases += amount
            released[cid] = amount
        else:
            result.charges -= amount
            if kind == RESERVE:
                reserved[cid] = -amount
    _check_releases(result, reserved, released)
    if stored != result.expected_balance:
        result.problems.append(
            f"balance is {stored} but credits - charges + releases = {result.expected_balance}"
        )
    return result


def _check_entry(
    result: Audit, row: dict[str, str], recorded: str | None, running: int, seen: set[str]
) -> None:
    """The checks of one ledger entry, given the running balance before it."""
    cid, kind = row.get("charge_id", ""), row.get("kind", "")
    amount = int(row.get("amount", "0"))
    if cid in seen:
        result.problems.append(f"charge id {cid} appears twice in the ledger")
    seen.add(cid)
    if (amount < 0 and kind in _GIVING) or (amount > 0 and kind not in _GIVING):
        result.problems.append(f"{cid}: a {kind} entry of {amount} has the wrong sign")
    after = running + amount
    if int(row.get("balance", "0")) != after:
        result.problems.append(
            f"{cid}: the entry says balance {row.get('balance')}, the entries up to it add up "
            f"to {after}"
        )
    if after < 0:
        result.problems.append(f"{cid}: the balance went negative ({after})")
    if kind in _RECORDED and recorded != str(amount):
        result.problems.append(
            f"{cid}: the applied-charges hash holds {recorded!r}, the ledger {amount}"
        )


def _check_releases(result: Audit, reserved: dict[str, int], released: dict[str, int]) -> None:
    """Each release gives back exactly its reservation; the unreleased ones are held."""
    for cid, amount in released.items():
        reservation_id = RESERVE + cid.removeprefix(RELEASE)
        if reservation_id not in reserved:
            result.problems.append(f"{cid} releases {reservation_id}, which is not in the ledger")
        elif reserved[reservation_id] != amount:
            result.problems.append(
                f"{cid} gives back {amount}, its reservation held {reserved[reservation_id]}"
            )
    result.held = {
        cid: amount
        for cid, amount in reserved.items()
        if RELEASE + cid.removeprefix(RESERVE) not in released
    }
