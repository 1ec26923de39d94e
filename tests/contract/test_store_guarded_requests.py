"""``store.admission.request_run`` and ``request_once``, the guarded requests of schedule runs,
on every backend (the cluster suite re-collects this module): one run at a time, a video once per
schedule, a repeated Idempotency-Key answered as by ``request``, and nothing appended or charged
when a guard refuses."""

from __future__ import annotations

import msgspec
import pytest

from engine.errors import InsufficientBalance
from engine.log.admission import Accepted, Refused
from engine.log.events import ExecutionRequested
from engine.log.ids import new_execution_id
from engine.log.store import EventStore
from tests.contract.builders import FEE, balance, funded, requested

pytestmark = pytest.mark.anyio

SCHEDULE = "sch_00000000000000000001"


def run_of(store: EventStore, owner: str) -> ExecutionRequested:
    """A schedule run's request (its shape beyond the schedule does not matter to the store)."""
    req = requested(store, owner)
    return msgspec.structs.replace(
        req,
        kind="schedule_run",
        schedule_id=SCHEDULE,
        execution_id=new_execution_id(store.keys.partition(owner)),
    )


async def schedule_record(store: EventStore, owner: str, raw: bytes = b"{}") -> str:
    """Stands for the schedule's record: the guard compares its bytes."""
    key = store.keys.resource(owner, "schedule", SCHEDULE)
    await store.redis.set(key, raw)
    return key


async def test_a_run_is_appended_and_named_by_the_marker(store: EventStore) -> None:
    owner = await funded(store, 5 * FEE)
    key = await schedule_record(store, owner)
    run = run_of(store, owner)
    result = await store.admission.request_run(
        run, idempotency=None, schedule_key=key, schedule_raw=b"{}", current_run=None, live=False
    )
    assert isinstance(result, Accepted)
    assert result.execution_id == run.execution_id
    assert await store.redis.get(store.keys.schedule_run(owner, SCHEDULE)) == (
        run.execution_id.encode()
    )
    assert await balance(store, owner) == 4 * FEE


async def test_a_live_run_or_a_moved_read_refuses_and_charges_nothing(store: EventStore) -> None:
    owner = await funded(store, 5 * FEE)
    key = await schedule_record(store, owner)

    async def attempt(current: str | None, live: bool, raw: bytes = b"{}") -> Accepted | Refused:
        run = run_of(store, owner)
        result = await store.admission.request_run(
            run,
            idempotency=None,
            schedule_key=key,
            schedule_raw=raw,
            current_run=current,
            live=live,
        )
        if isinstance(result, Refused):
            assert await store.log.history(run.execution_id) == []
        return result

    first = await attempt(None, False)
    assert isinstance(first, Accepted)
    running = first.execution_id
    assert await attempt(running, True) == Refused("running", running)
    assert await attempt(None, False) == Refused("moved")  # the marker moved since it was read
    assert await attempt(running, False, raw=b"[]") == Refused("moved")  # so did the schedule
    assert await balance(store, owner) == 4 * FEE
    # Once the marker's run has ended (the caller folded its history), the next run goes in.
    assert isinstance(await attempt(running, False), Accepted)
    assert await balance(store, owner) == 3 * FEE


async def test_a_repeated_key_gets_its_run_back_even_while_it_runs(store: EventStore) -> None:
    owner = await funded(store, 5 * FEE)
    key = await schedule_record(store, owner)
    idem = ("digest", "fingerprint")
    first = run_of(store, owner)
    await store.admission.request_run(
        first, idempotency=idem, schedule_key=key, schedule_raw=b"{}", current_run=None, live=False
    )
    again = await store.admission.request_run(
        run_of(store, owner),
        idempotency=idem,
        schedule_key=key,
        schedule_raw=b"{}",
        current_run=first.execution_id,
        live=True,
    )
    assert again == Accepted(first.execution_id, duplicate=True)
    assert await balance(store, owner) == 4 * FEE


async def test_a_run_that_cannot_pay_moves_no_marker(store: EventStore) -> None:
    owner = await funded(store, FEE - 1)
    key = await schedule_record(store, owner)
    with pytest.raises(InsufficientBalance):
        await store.admission.request_run(
            run_of(store, owner),
            idempotency=None,
            schedule_key=key,
            schedule_raw=b"{}",
            current_run=None,
            live=False,
        )
    assert await store.redis.get(store.keys.schedule_run(owner, SCHEDULE)) is None


async def test_a_video_is_requested_once_per_schedule(store: EventStore) -> None:
    owner = await funded(store, 0)
    seen = store.keys.schedule_seen(owner, SCHEDULE)
    first = requested(store, owner, fee=0)
    result = await store.admission.request_once(
        first, idempotency=("k1", "f"), seen_key=seen, seen_field="vid", seen_value="run1 x"
    )
    assert isinstance(result, Accepted)
    assert await store.redis.hget(seen, "vid") == b"run1 x"
    # The same key (the same run asking again): its execution back.
    again = await store.admission.request_once(
        requested(store, owner, fee=0),
        idempotency=("k1", "f"),
        seen_key=seen,
        seen_field="vid",
        seen_value="run1 y",
    )
    assert again == Accepted(first.execution_id, duplicate=True)
    # Another key (another run): refused with what the first recorded, nothing appended.
    other = requested(store, owner, fee=0)
    refused = await store.admission.request_once(
        other, idempotency=("k2", "f"), seen_key=seen, seen_field="vid", seen_value="run2 z"
    )
    assert refused == Refused("seen", "run1 x")
    assert await store.log.history(other.execution_id) == []
    log = await store.log.read_log(store.keys.partition(owner), "0-0", 10)
    assert [e.event.execution_id for e in log if e.event] == [first.execution_id]
