"""Provider cost passed through to the owner — reserve, settle, release — as pure arithmetic.

The flat fee is charged with ``ExecutionRequested`` (engine.log.admission). Provider cost moves
while the job runs, carried by the step's own events and applied by the same expected-seq append
(one Lua script, one slot: engine.log.event_log.APPEND_BATCH) that moves the balance and writes
the ledger entries:

    StepStarted.reserve_id           reserve:{execution}:{step}:{attempt}  -estimate
    StepCompleted.settlement         release:{execution}:{step}:{attempt}  +estimate
                                     settle:{execution}:{step}:{attempt}   -actual
    StepFailed.settlement            release:{execution}:{step}:{attempt}  +estimate
    CostReleased                     release:{execution}:{step}:{attempt}  +estimate, for a
                                     reservation no outcome settles (abandoned: the takeover's
                                     next StepStarted goes with it; ended; cancelled)

A completed attempt releases its whole reservation and is charged its actual cost in the same
event (release first, so the freed estimate pays for the actual cost). A failed, cancelled or
abandoned attempt is charged nothing. Logs written before the money moved onto the step events
carried the same charge ids on CostReserved, CostReleased and CostCharged events of their own;
:func:`moves_of` still reads them, so a takeover of such an execution releases what it held.

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
      code ``insufficient_balance`` takes the place of its StepStarted and the execution ends
      ``error`` (402), its open reservations released;
    * a refused settlement (the actual cost exceeded the estimate by more than the balance holds):
      the step did run, so the charge is capped at what the balance holds (:func:`capped`):
      ``charged`` is what was taken (the balance ends at 0), ``uncovered`` the rest, which is
      written off and shown on the ledger entry (field ``uncovered``). The next step with a cost
      cannot reserve.

Ledger entries (``keys.ledger``): ``charge_id``, ``kind``, ``amount`` (signed micro-coins:
negative takes from the balance), ``balance`` (after), ``execution_id``, ``at``. Kinds: ``credit``
(engine.money.accounts), ``fee`` (the request), ``read`` (read fees), ``reserve``, ``settle``,
``release``: one entry per charge id, whichever event carried it. engine.money.audit recomputes
an account from its ledger.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

import msgspec

from engine.log.event_log import Move
from engine.log.events import (
    MONEY_ON_STEPS_SCHEMA,
    AnyEvent,
    CostCharged,
    CostReleased,
    CostReserved,
    Settlement,
    StepCompleted,
    StepFailed,
    StepStarted,
)

_Outcome = TypeVar("_Outcome", bound=StepCompleted | StepFailed)
_Charge = TypeVar("_Charge", bound=CostCharged | StepCompleted)

RESERVE = "reserve"
SETTLE = "settle"
RELEASE = "release"
CREDIT = "credit"


# -- charge ids and money events -----------------------------------------------------------------


def charge_id(kind: str, execution_id: str, step_index: int, attempt: int) -> str:
    """The charge id of a ``reserve``, ``settle`` or ``release`` of one attempt of one step."""
    return f"{kind}:{execution_id}:{step_index}:{attempt}"


def reservation(execution_id: str, step_index: int, attempt: int, amount: int) -> CostReserved:
    """The reservation of an attempt's estimated cost (``amount`` > 0), as a hold: what
    engine.run.plan lists as held, whichever event carried it (a reserving StepStarted, or a
    CostReserved of an older log)."""
    return CostReserved(
        execution_id=execution_id,
        charge_id=charge_id(RESERVE, execution_id, step_index, attempt),
        amount=amount,
        step_index=step_index,
        attempt=attempt,
    )


def reserving(started: StepStarted) -> StepStarted:
    """``started`` holding its ``estimated_cost`` (> 0) from the owner's balance."""
    cid = charge_id(RESERVE, started.execution_id, started.step_index, started.attempt)
    return msgspec.structs.replace(started, reserve_id=cid, schema=MONEY_ON_STEPS_SCHEMA)


def settled(outcome: _Outcome, held: CostReserved | None) -> _Outcome:
    """``outcome`` carrying its attempt's settlement: the release of ``held`` (its reservation,
    None when it reserved nothing) and, for a StepCompleted with a cost, the charge of that cost.
    ``outcome`` unchanged when neither applies."""
    xid, index, attempt = outcome.execution_id, outcome.step_index, outcome.attempt
    settlement = Settlement()
    if held is not None:
        settlement = Settlement(
            reservation=held.charge_id,
            release_id=charge_id(RELEASE, xid, held.step_index, held.attempt),
            released=held.amount,
        )
    if isinstance(outcome, StepCompleted) and outcome.cost > 0:
        settlement = msgspec.structs.replace(
            settlement, charge_id=charge_id(SETTLE, xid, index, attempt), charged=outcome.cost
        )
    if settlement == Settlement():
        return outcome
    return msgspec.structs.replace(outcome, settlement=settlement, schema=MONEY_ON_STEPS_SCHEMA)


def settlement(execution_id: str, step_index: int, attempt: int, amount: int) -> CostCharged:
    """The charge of a completed attempt's actual cost, as an event of its own (the shape of logs
    written before settlements travelled on the StepCompleted; tests write it)."""
    return CostCharged(
        execution_id=execution_id,
        charge_id=charge_id(SETTLE, execution_id, step_index, attempt),
        amount=amount,
        step_index=step_index,
    )


def capped(charge: _Charge, available: int) -> _Charge:
    """``charge`` (a CostCharged, or a StepCompleted's settlement) cut down to the ``available``
    balance; the rest is recorded as uncovered."""
    if isinstance(charge, StepCompleted):
        s = charge.settlement
        assert s is not None, charge
        assert s.charge_id, charge
        taken = max(0, min(s.charged, available))
        cut = msgspec.structs.replace(s, charged=taken, uncovered=s.uncovered + s.charged - taken)
        return msgspec.structs.replace(charge, settlement=cut)
    taken = max(0, min(charge.amount, available))
    uncovered = charge.uncovered + charge.amount - taken
    return msgspec.structs.replace(charge, amount=taken, uncovered=uncovered)


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


def move_of(event: AnyEvent, index: int = 0) -> list[Move]:
    """The balance movements ``event`` stands for, as the ``index``-th event of its append, in
    the order they apply (empty for an event that moves no money)."""
    match event:
        case CostReserved():
            return [Move(index, RESERVE, event.charge_id, -event.amount)]
        case CostCharged():
            return [Move(index, SETTLE, event.charge_id, -event.amount, event.uncovered)]
        case CostReleased():
            return [Move(index, RELEASE, event.charge_id, event.amount)]
        case StepStarted(reserve_id=str(reserve_id)):
            return [Move(index, RESERVE, reserve_id, -event.estimated_cost)]
        case StepCompleted(settlement=Settlement() as s) | StepFailed(settlement=Settlement() as s):
            moves = []
            if s.release_id:
                moves.append(Move(index, RELEASE, s.release_id, s.released))
            if s.charge_id:
                moves.append(Move(index, SETTLE, s.charge_id, -s.charged, s.uncovered))
            return moves
    return []


def moves_of(events: Iterable[AnyEvent]) -> tuple[Move, ...]:
    """The balance movements of an append of ``events``, in order (what AppendOp.moves holds)."""
    return tuple(m for i, e in enumerate(events) for m in move_of(e, i))
