"""Provider cost passed through to the owner — reserve, settle, release — as pure arithmetic.

The flat fee is charged with ``ExecutionRequested`` (engine.log.admission). Provider cost moves
while the job runs, in three kinds of money event, each appended by the worker in the same
expected-seq append (one Lua script, one slot: engine.log.event_log.APPEND_BATCH) that moves the
balance and writes the ledger entry:

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
``release``. engine.money.audit recomputes an account from its ledger.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.log.event_log import Move
from engine.log.events import AnyEvent, CostCharged, CostReleased, CostReserved

RESERVE = "reserve"
SETTLE = "settle"
RELEASE = "release"
CREDIT = "credit"


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
