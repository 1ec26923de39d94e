"""Provider cost charged by the worker (engine.money.billing), on fakeredis and a private real
Redis: reserve before a step, settle and release after it, release on failure, cancellation,
takeover and dead letter, and a step the balance cannot cover is never sent to its provider. Every
test ends with the ledger audit."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from engine.log.events import (
    AnyEvent,
    CostCharged,
    CostReleased,
    CostReserved,
    ExecutionCancelled,
    ExecutionCancelRequested,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    RunItemRecorded,
    StepCompleted,
    StepFailed,
    StepSpec,
    StepStarted,
    Target,
    WorkflowSnapshot,
)
from engine.log.ids import new_execution_id, new_id
from engine.money import accounts, billing
from engine.money.audit import Audit, audit_account
from engine.providers import registry
from engine.providers.base import LLM, Completion, Transcriber, Transcription
from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.settings import Settings
from engine.tools import TOOLS, StepResult, Tool, ToolContext
from projections.fold import fold
from tests.helpers import eventually
from tests.integration.test_worker import llm, of_type, transcribe
from tests.rendered import execution_body

pytestmark = pytest.mark.anyio

FEE = 10_000
TEXT = "The council met on Monday. It approved the budget. Nobody objected."


class _CountingLLM:
    def __init__(self, inner: LLM, calls: Counter[str]) -> None:
        self.inner, self.calls = inner, calls

    async def complete(self, **kwargs: Any) -> Completion:
        self.calls["llm"] += 1
        return await self.inner.complete(**kwargs)


class _CountingTranscriber:
    def __init__(self, inner: Transcriber, calls: Counter[str]) -> None:
        self.inner, self.calls = inner, calls

    async def transcribe(self, **kwargs: Any) -> Transcription:
        self.calls["transcriber"] += 1
        return await self.inner.transcribe(**kwargs)

    def known_duration_s(self, media: str, lang: str) -> int | None:
        return self.inner.known_duration_s(media, lang)


class CountingProviders(registry.Providers):
    """The simulated providers, counting the calls each kind receives."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    def llm(self, settings: Settings) -> LLM:
        return _CountingLLM(super().llm(settings), self.calls)

    def transcriber(self, settings: Settings) -> Transcriber:
        return _CountingTranscriber(super().transcriber(settings), self.calls)


class _OverchargingLLM:
    def __init__(self, inner: LLM, cost: int) -> None:
        self.inner, self.cost = inner, cost

    async def complete(self, **kwargs: Any) -> Completion:
        return dataclasses.replace(await self.inner.complete(**kwargs), cost=self.cost)


class OverchargingProviders(registry.Providers):
    """The simulated providers, with an LLM that bills ``cost`` for every completion."""

    def __init__(self, cost: int) -> None:
        super().__init__()
        self.cost = cost

    def llm(self, settings: Settings) -> LLM:
        return _OverchargingLLM(super().llm(settings), self.cost)


@pytest.fixture
def providers() -> Iterator[CountingProviders]:
    before = registry.current()
    counting = CountingProviders()
    registry.configure(counting)
    try:
        yield counting
    finally:
        registry.configure(before)


async def funded(runtime: Runtime, micro: int) -> str:
    made, _ = await accounts.create_account(runtime, name="billing", coins_micro=micro)
    return made.account_id


def source_input(**extra: Any) -> dict[str, Any]:
    item = new_id("itm")
    return {"item_id": item, "source": f"https://youtu.be/{item[-11:]}", "lang": "en", **extra}


async def request(
    runtime: Runtime, owner: str, steps: list[StepSpec], inputs: list[dict[str, Any]]
) -> ExecutionRequested:
    event = ExecutionRequested(
        execution_id=new_execution_id(runtime.store.keys.partition(owner)),
        owner=owner,
        kind="process",
        target=Target(kind="youtube_video", item_id=new_id("itm")),
        workflow=WorkflowSnapshot(
            workflow_id=None, name="billing", target_kind="youtube_video", steps=steps
        ),
        step_inputs=inputs,
        fee=FEE,
        request_id=new_id("req"),
    )
    await runtime.store.admission.request(event)
    return event


async def audited(runtime: Runtime, owner: str) -> Audit:
    """The owner's audit, which must hold with nothing left reserved."""
    audit = await audit_account(runtime, owner)
    assert audit.ok, audit.problems
    assert audit.held == {}
    assert audit.balance == await accounts.balance(runtime, owner)
    return audit


async def test_a_completed_step_pays_its_actual_cost(runtime: Runtime) -> None:
    owner = await funded(runtime, 1_000_000)
    req = await request(runtime, owner, [transcribe(), llm("Summarise.")], [source_input()])
    await Worker(runtime).run_until_idle()

    history = await runtime.store.log.history(req.execution_id)
    done = of_type(history, StepCompleted)
    assert [d.cost > 0 for d in done] == [True, True]
    reserved = of_type(history, CostReserved)
    charged = of_type(history, CostCharged)
    released = of_type(history, CostReleased)
    assert [(r.step_index, r.attempt) for r in reserved] == [(0, 1), (1, 1)]
    assert [c.amount for c in charged] == [d.cost for d in done]
    assert all(c.uncovered == 0 for c in charged)
    assert [(r.reservation, r.amount, r.reason) for r in released] == [
        (r.charge_id, r.amount, "settled") for r in reserved
    ]
    # Each estimate was an upper bound of the actual cost.
    assert all(r.amount >= d.cost for r, d in zip(reserved, done, strict=True))
    provider_cost = sum(d.cost for d in done)
    [completed] = of_type(history, ExecutionCompleted)
    assert completed.cost == FEE + provider_cost

    assert await accounts.balance(runtime, owner) == 1_000_000 - FEE - provider_cost
    audit = await audited(runtime, owner)
    assert audit.totals["settle"] == -provider_cost
    # The execution shows what the balance paid: the fee plus each step's cost.
    body = execution_body(fold(history))
    assert body["execution"]["cost_coins"] == (FEE + provider_cost) / 1_000_000
    assert [s["cost_coins"] for s in body["steps"]] == [d.cost / 1_000_000 for d in done]
    assert [s["usage"] for s in body["steps"]] == [d.usage for d in done]


class _ReportingTool(Tool):
    """A tool that returns an event of its own with its result, and costs 500."""

    tool_id = "test_billing_reporting"
    description = "test"
    provider_kind = "llm"

    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        return 1_000

    async def run(self, ctx: ToolContext) -> StepResult:
        note = RunItemRecorded(
            execution_id=ctx.execution_id,
            item_id="itm_x",
            channel_id="UC_x",
            video_id="vid_x",
            outcome="skipped_seen",
        )
        return StepResult(output={"ok": True}, cost=500, events=(note,))


async def test_a_step_whose_tool_returns_events_still_pays_its_cost(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = _ReportingTool()
    monkeypatch.setitem(TOOLS, tool.tool_id, tool)
    owner = await funded(runtime, 1_000_000)
    req = await request(
        runtime, owner, [StepSpec(step_id="stp_r", tool_id=tool.tool_id)], [source_input()]
    )
    await Worker(runtime).run_until_idle()

    history = await runtime.store.log.history(req.execution_id)
    assert [c.amount for c in of_type(history, CostCharged)] == [500]
    assert [r.reason for r in of_type(history, CostReleased)] == ["settled"]
    assert await accounts.balance(runtime, owner) == 1_000_000 - FEE - 500
    await audited(runtime, owner)


async def test_running_out_mid_flight_never_calls_the_provider_of_the_next_step(
    runtime: Runtime, providers: CountingProviders
) -> None:
    steps = [llm("Summarise."), transcribe()]
    first_input = {"text": TEXT}
    estimate = TOOLS["llm_prompt"].estimate_cost(first_input, steps[0])
    # The balance covers the fee and step 1's reservation, not step 2's.
    owner = await funded(runtime, FEE + estimate)
    req = await request(runtime, owner, steps, [first_input, source_input()])
    await Worker(runtime).run_until_idle()

    assert providers.calls == Counter({"llm": 1})  # the transcriber was never called
    history = await runtime.store.log.history(req.execution_id)
    [done] = of_type(history, StepCompleted)
    assert done.step_index == 0
    assert [s.step_index for s in of_type(history, StepStarted)] == [0]
    assert [r.step_index for r in of_type(history, CostReserved)] == [0]
    [refused] = of_type(history, StepFailed)
    assert (refused.step_index, refused.code, refused.retryable) == (
        1,
        "insufficient_balance",
        False,
    )
    end = history[-1]
    assert isinstance(end, ExecutionFailed)
    assert (end.code, end.http_status) == ("insufficient_balance", 402)

    assert await accounts.balance(runtime, owner) == estimate - done.cost
    await audited(runtime, owner)
    body = execution_body(fold(history))
    assert body["execution"]["status"] == "error"
    assert body["execution"]["error"]["code"] == "insufficient_balance"
    message = body["execution"]["error"]["message"]
    assert "coins)" in message  # amounts in coins, as everywhere else
    assert "micro" not in message
    assert body["execution"]["cost_coins"] == (FEE + done.cost) / 1_000_000
    assert [(s["status"], s["cost_coins"]) for s in body["steps"]] == [
        ("done", done.cost / 1_000_000),
        ("error", 0.0),
    ]


async def test_a_balance_that_cannot_cover_the_first_step_starts_nothing(
    runtime: Runtime, providers: CountingProviders
) -> None:
    owner = await funded(runtime, FEE + 1)
    req = await request(runtime, owner, [transcribe()], [source_input()])
    await Worker(runtime).run_until_idle()

    assert providers.calls == Counter()
    history = await runtime.store.log.history(req.execution_id)
    assert [type(e).__name__ for e in history] == [
        "ExecutionRequested",
        "ExecutionStarted",
        "StepFailed",
        "ExecutionFailed",
    ]
    assert await accounts.balance(runtime, owner) == 1
    await audited(runtime, owner)


async def test_a_failed_attempt_is_released_and_the_retry_reserves_again(
    runtime: Runtime,
) -> None:
    owner = await funded(runtime, 1_000_000)
    inputs = [source_input(sim={"fail_attempts": 1})]
    req = await request(runtime, owner, [transcribe()], inputs)
    await Worker(runtime).run_until_idle()

    history = await runtime.store.log.history(req.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    [done] = of_type(history, StepCompleted)
    assert done.attempt == 2
    released = of_type(history, CostReleased)
    assert [(r.attempt, r.reason) for r in released] == [(1, "failed"), (2, "settled")]
    [charged] = of_type(history, CostCharged)
    assert charged.charge_id == billing.charge_id("settle", req.execution_id, 0, 2)
    assert await accounts.balance(runtime, owner) == 1_000_000 - FEE - done.cost
    audit = await audited(runtime, owner)
    assert audit.totals["reserve"] == -audit.totals["release"]


async def test_a_step_failing_for_good_charges_nothing_but_the_fee(runtime: Runtime) -> None:
    owner = await funded(runtime, 1_000_000)
    req = await request(runtime, owner, [transcribe()], [source_input(sim={"fail": "fatal"})])
    await Worker(runtime).run_until_idle()

    history = await runtime.store.log.history(req.execution_id)
    assert [type(e).__name__ for e in history[-3:]] == [
        "StepFailed",
        "CostReleased",
        "ExecutionFailed",
    ]
    assert await accounts.balance(runtime, owner) == 1_000_000 - FEE
    await audited(runtime, owner)


async def test_cancel_releases_the_reservation_of_the_running_step(runtime: Runtime) -> None:
    owner = await funded(runtime, 1_000_000)
    inputs = [source_input(sim={"hang": True})]
    req = await request(runtime, owner, [transcribe()], inputs)
    store = runtime.store
    async with anyio.create_task_group() as tg:
        tg.start_soon(Worker(runtime).run_until_idle)
        history = await eventually(
            lambda: store.log.history(req.execution_id),
            until=lambda h: bool(of_type(h, StepStarted)),
        )
        assert await accounts.balance(runtime, owner) < 1_000_000 - FEE  # reserved
        cancel = ExecutionCancelRequested(execution_id=req.execution_id, requested_by=owner)
        await store.log.append(req.execution_id, len(history), [cancel])
        with anyio.fail_after(10):  # bounds a broken build; the verdict is the log below
            await eventually(
                lambda: store.log.history(req.execution_id),
                until=lambda h: isinstance(h[-1], ExecutionCancelled),
            )
    history = await store.log.history(req.execution_id)
    [released] = of_type(history, CostReleased)
    assert released.reason == "cancelled"
    assert await accounts.balance(runtime, owner) == 1_000_000 - FEE
    await audited(runtime, owner)


async def test_takeover_releases_the_dead_workers_reservation_once(runtime: Runtime) -> None:
    owner = await funded(runtime, 1_000_000)
    req = await request(runtime, owner, [transcribe()], [source_input()])
    store, x = runtime.store, req.execution_id
    p = store.keys.partition(owner)
    # A worker that reserved step 0 and started it, then died mid-call.
    [lease] = (await store.leases.dispatch({p: 10}, "dead"))[p]
    entry = lease.entry
    held = billing.reservation(x, 0, 1, 60_000)
    started: list[AnyEvent] = [
        ExecutionStarted(execution_id=x, worker_id="dead", epoch=1),
        held,
        StepStarted(execution_id=x, step_index=0, attempt=1, epoch=1, worker_id="dead"),
    ]
    await store.log.append(x, 1, started, owner=owner, moves=billing.moves_of(started))
    assert await accounts.balance(runtime, owner) == 1_000_000 - FEE - 60_000
    await store.leases.hand_back(p, "dead", [entry.entry_id])
    await Worker(runtime, worker_id="heir").run_until_idle()

    history = await store.log.history(x)
    assert isinstance(history[-1], ExecutionCompleted)
    # The heir's first append releases the abandoned reservation, then reserves its own attempt.
    assert [type(e).__name__ for e in history[4:7]] == [
        "CostReleased",
        "CostReserved",
        "StepStarted",
    ]
    released = of_type(history, CostReleased)
    assert [(r.reservation, r.reason) for r in released] == [
        (held.charge_id, "abandoned"),
        (billing.charge_id("reserve", x, 0, 2), "settled"),
    ]
    [done] = of_type(history, StepCompleted)
    assert done.attempt == 2
    assert await accounts.balance(runtime, owner) == 1_000_000 - FEE - done.cost

    # Another delivery of the finished execution moves nothing.
    before = await store.redis.xlen(store.keys.ledger(owner))
    await Worker(runtime, worker_id="late").run_until_idle()
    assert await store.redis.xlen(store.keys.ledger(owner)) == before
    await audited(runtime, owner)


async def test_dead_letter_releases_what_the_execution_held(runtime: Runtime) -> None:
    owner = await funded(runtime, 1_000_000)
    req = await request(runtime, owner, [transcribe()], [source_input()])
    store, x = runtime.store, req.execution_id
    p = store.keys.partition(owner)
    [lease] = (await store.leases.dispatch({p: 10}, "crashy"))[p]
    entry = lease.entry
    started: list[AnyEvent] = [
        ExecutionStarted(execution_id=x, worker_id="crashy", epoch=1),
        billing.reservation(x, 0, 1, 60_000),
        StepStarted(execution_id=x, step_index=0, attempt=1, epoch=1, worker_id="crashy"),
    ]
    await store.log.append(x, 1, started, owner=owner, moves=billing.moves_of(started))
    # Every delivery so far ended in a crash (the delivery count is the only trace).
    for _ in range(runtime.settings.max_deliveries - 1):
        await store.leases.claim_expired(p, "crashy", min_idle_ms=0)
    await store.leases.hand_back(p, "crashy", [entry.entry_id])
    await Worker(runtime).run_until_idle()

    history = await store.log.history(x)
    assert [type(e).__name__ for e in history[-3:]] == [
        "StepFailed",
        "CostReleased",
        "ExecutionFailed",
    ]
    assert of_type(history, CostReleased)[0].reason == "ended"
    assert await accounts.balance(runtime, owner) == 1_000_000 - FEE
    await audited(runtime, owner)


async def test_an_actual_cost_above_the_balance_is_capped_at_zero(runtime: Runtime) -> None:
    # A provider that bills more than the estimate assumed (a tokenizer counting more tokens):
    # the step costs three times its reservation, and the balance holds only the reservation.
    steps = [llm("Summarise.")]
    inputs: list[dict[str, Any]] = [{"text": TEXT}]
    estimate = TOOLS["llm_prompt"].estimate_cost(inputs[0], steps[0])
    owner = await funded(runtime, FEE + estimate)
    req = await request(runtime, owner, steps, inputs)
    before = registry.current()
    registry.configure(OverchargingProviders(3 * estimate))
    try:
        await Worker(runtime).run_until_idle()
    finally:
        registry.configure(before)

    history = await runtime.store.log.history(req.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    assert history[-1].cost == FEE + estimate  # the total the log states is what was paid
    [done] = of_type(history, StepCompleted)
    assert done.cost == 3 * estimate  # what the provider reported
    [charged] = of_type(history, CostCharged)
    assert (charged.amount, charged.uncovered) == (estimate, 2 * estimate)
    assert await accounts.balance(runtime, owner) == 0
    audit = await audited(runtime, owner)
    assert audit.uncovered == 2 * estimate
    # The execution shows what was paid.
    body = execution_body(fold(history))
    assert body["execution"]["cost_coins"] == (FEE + estimate) / 1_000_000
