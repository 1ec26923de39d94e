"""Retrying a dead letter (engine.run.revive), on fakeredis and on a private real Redis.

An execution is dead-lettered the way a crashing worker gets it there (its lease delivered more
than ``max_deliveries`` times), then retried: it resumes from its first step without a
StepCompleted, once, however many ask at once, and the projections and the feed follow.
"""

from __future__ import annotations

import anyio
import pytest

from engine import commands
from engine.archive import reader
from engine.errors import InvalidRequest, NotFound, StateConflict
from engine.log.events import (
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionRetried,
    ExecutionStarted,
    StepCompleted,
    StepStarted,
    has_ended,
)
from engine.log.ids import new_execution_id
from engine.log.keys import WORKER_GROUP
from engine.run import claims, revive
from engine.run.worker import Worker
from engine.runtime import Runtime
from projections.feed import read_entries
from projections.projector import Projector
from projections.queries import Queries
from tests.golden.scenarios import GOLDEN_OWNER, golden_id, with_dead_letter_retried
from tests.integration.test_worker import llm, of_type, request, transcribe

pytestmark = pytest.mark.anyio


async def dead_lettered(runtime: Runtime) -> ExecutionRequested:
    """A two-step execution whose first step completed and whose second step's worker kept
    dying: its lease went past ``max_deliveries`` and a worker dead-lettered it."""
    store = runtime.store
    req = await request(store, [transcribe(), llm("Summarise.")])
    p = store.keys.partition(req.owner)
    x = req.execution_id
    [lease] = (await store.leases.dispatch({p: 10}, "crashy"))[p]
    await store.log.append(
        x,
        1,
        [
            ExecutionStarted(execution_id=x, worker_id="crashy", epoch=1),
            StepStarted(execution_id=x, step_index=0, attempt=1, epoch=1, worker_id="crashy"),
            StepCompleted(execution_id=x, step_index=0, attempt=1, output={"text": "hi there"}),
            StepStarted(execution_id=x, step_index=1, attempt=1, epoch=1, worker_id="crashy"),
        ],
    )
    for _ in range(runtime.settings.max_deliveries - 1):
        await store.leases.claim_expired(p, "crashy", min_idle_ms=0)
    await store.leases.hand_back(p, "crashy", [lease.entry.entry_id])
    await Worker(runtime, worker_id="triage").run_until_idle()
    history = await reader.execution_history(store, runtime.archive, x)
    assert isinstance(history[-1], ExecutionFailed)
    assert x in [d.execution_id for d in await revive.dead_letters(store, p)]
    return req


async def test_a_retried_dead_letter_resumes_from_its_first_step_without_completion(
    runtime: Runtime,
) -> None:
    store = runtime.store
    req = await dead_lettered(runtime)
    x, p = req.execution_id, store.keys.partition(req.owner)

    await Projector(runtime).run_until_idle()
    queries = Queries(runtime)
    assert (
        await queries.list_executions(req.owner, active=True, limit=10, cursor=None)
    ).views == []
    retried = await revive.retry(store, x, "cli:ops@box")
    assert retried.execution_id == x
    assert await revive.dead_letters(store, p) == []
    # It runs again: its stream keeps no expiry until its next end gives it one.
    assert await store.redis.pttl(store.keys.execution(x)) == -1
    # Folded, it is pending again and back among the owner's active executions.
    await Projector(runtime).run_until_idle()
    [active] = (await queries.list_executions(req.owner, active=True, limit=10, cursor=None)).views
    assert (active.execution_id, active.status, active.retries) == (x, "pending", 1)
    await Worker(runtime, worker_id="healer").run_until_idle()

    history = await store.log.history(x)
    assert isinstance(history[-1], ExecutionCompleted)
    assert await store.redis.pttl(store.keys.execution(x)) > 0
    [event] = of_type(history, ExecutionRetried)
    assert event.requested_by == "cli:ops@box"
    assert event.seq == retried.seq
    assert "delivered" in event.reason
    # Step 0 completed before the dead letter and is never run again; step 1 starts over.
    assert [c.step_index for c in of_type(history, StepCompleted)] == [0, 1]
    after = [s for s in of_type(history, StepStarted) if s.seq > event.seq]
    assert [(s.step_index, s.attempt) for s in after] == [(1, 2)]

    await Projector(runtime).run_until_idle()
    view = await Queries(runtime).get_view(req.owner, x)
    assert view is not None
    assert view.status == "done"
    assert view.error is None
    assert view.retries == 1
    assert [s.status for s in view.steps] == ["done", "done"]
    feed = await store.redis.xrange(store.keys.feed(p, req.owner))
    types = [e.type for i, fields in feed for e in read_entries(i.decode(), fields)]
    assert "ExecutionRetried" in types
    assert types[-1] == "ExecutionCompleted"


async def test_two_concurrent_retries_resume_it_once(runtime: Runtime) -> None:
    store = runtime.store
    req = await dead_lettered(runtime)
    x = req.execution_id
    outcomes: list[object] = []

    async def one(by: str) -> None:
        try:
            outcomes.append(await revive.retry(store, x, by))
        except StateConflict as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tg:
        for by in ("admin:a", "admin:b", "cli:c"):
            tg.start_soon(one, by)

    assert sum(isinstance(o, revive.Retried) for o in outcomes) == 1
    assert sum(isinstance(o, StateConflict) for o in outcomes) == 2
    assert len(of_type(await store.log.history(x), ExecutionRetried)) == 1
    assert await store.redis.lrange(store.keys.ready(req.owner), 0, -1) == [x.encode()]
    await Worker(runtime).run_until_idle()
    history = await store.log.history(x)
    assert isinstance(history[-1], ExecutionCompleted)
    assert len(of_type(history, ExecutionCompleted)) == 1
    with pytest.raises(StateConflict, match="not dead-lettered"):
        await revive.retry(store, x, "admin:late")


async def test_what_cannot_be_retried_is_a_clear_error(runtime: Runtime) -> None:
    store = runtime.store
    done = await request(store, [transcribe()])
    await Worker(runtime).run_until_idle()
    with pytest.raises(StateConflict, match=r"is not dead-lettered \(its status is done\)"):
        await revive.retry(store, done.execution_id, "cli:ops")
    with pytest.raises(NotFound):
        await revive.retry(store, new_execution_id(1), "cli:ops")
    with pytest.raises(InvalidRequest, match="not an execution id"):
        await revive.retry(store, "itm_nope", "cli:ops")
    with pytest.raises(InvalidRequest, match="who asked"):
        await revive.retry(store, done.execution_id, "  ")
    assert of_type(await store.log.history(done.execution_id), ExecutionRetried) == []


async def test_retry_all_retries_executions_and_reports_the_rest(runtime: Runtime) -> None:
    store = runtime.store
    req = await dead_lettered(runtime)
    # A poisoned lease (not an ExecutionRequested) held by a dead worker: its takeover
    # dead-letters it as undecodable, a dead letter that is no execution.
    await store.redis.xadd(store.keys.work(2), {"e": b"{not json"})
    await store.redis.xreadgroup(WORKER_GROUP, "ghost", {store.keys.work(2): ">"})
    [poisoned] = await store.leases.claim_expired(2, "heir", min_idle_ms=0)
    assert await claims.triage(store, runtime.settings, "heir", 2, poisoned) is None

    report = await revive.retry_all(store, "cli:ops")
    assert [r.execution_id for r in report.retried] == [req.execution_id]
    [(skipped, reason)] = report.skipped
    assert skipped.execution_id is None
    assert skipped.partition == 2
    assert "not an execution" in reason
    await Worker(runtime).run_until_idle()
    assert isinstance((await store.log.history(req.execution_id))[-1], ExecutionCompleted)


async def test_an_execution_dead_lettered_before_it_started_starts_when_retried(
    runtime: Runtime,
) -> None:
    """The poisoned lease that never got as far as ExecutionStarted (every worker died on it at
    once): retried, it starts from the beginning and ends done."""
    store = runtime.store
    req = await request(store, [transcribe()])
    p = store.keys.partition(req.owner)
    [lease] = (await store.leases.dispatch({p: 10}, "crashy"))[p]
    for _ in range(runtime.settings.max_deliveries - 1):
        await store.leases.claim_expired(p, "crashy", min_idle_ms=0)
    await store.leases.hand_back(p, "crashy", [lease.entry.entry_id])
    await Worker(runtime).run_until_idle()
    history = await store.log.history(req.execution_id)
    assert [type(e).__name__ for e in history] == ["ExecutionRequested", "ExecutionFailed"]

    await revive.retry(store, req.execution_id, "cli:ops")
    await Worker(runtime).run_until_idle()
    history = await store.log.history(req.execution_id)
    assert [type(e).__name__ for e in history][2:4] == ["ExecutionRetried", "ExecutionStarted"]
    assert isinstance(history[-1], ExecutionCompleted)
    await Projector(runtime).run_until_idle()
    view = await Queries(runtime).get_view(req.owner, req.execution_id)
    assert view is not None
    assert view.status == "done"


async def test_a_retried_execution_can_be_cancelled_by_its_owner(runtime: Runtime) -> None:
    """Retried, it runs again: its owner's cancel is taken, not refused as finished."""
    store = runtime.store
    req = await dead_lettered(runtime)
    await revive.retry(store, req.execution_id, "cli:ops")
    await commands.cancel(runtime, req.owner, req.execution_id)
    await Worker(runtime).run_until_idle()
    history = await store.log.history(req.execution_id)
    assert isinstance(history[-1], ExecutionCancelled)


def test_has_ended_knows_a_retry_reopens_an_execution() -> None:
    events = with_dead_letter_retried(golden_id(1), GOLDEN_OWNER)
    cut = next(i for i, e in enumerate(events) if isinstance(e, ExecutionRetried))
    assert has_ended(events[:cut])
    assert not has_ended(events[: cut + 1])
    assert has_ended(events)
