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

from engine.log.event_log import Move
from engine.log.events import (
    AnyEvent,
    CostReleased,
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


def moves(history: list[AnyEvent], kind: str) -> list[Move]:
    """The balance movements of ``kind`` the log stands for, whichever events carry them; each
    Move's ``event_index`` is its event's place in ``history``."""
    return [m for i, e in enumerate(history) for m in billing.move_of(e, i) if m.kind == kind]


def carriers(history: list[AnyEvent], kind: str) -> list[str]:
    """The types of the events that carry the moves of ``kind``, in order."""
    return [type(history[m.event_index]).__name__ for m in moves(history, kind)]


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
    # The money travels on the steps' own events: no event of its own.
    assert [type(e).__name__ for e in history] == [
        "ExecutionRequested",
        "ExecutionStarted",
        "StepStarted",
        "StepCompleted",
        "StepStarted",
        "StepCompleted",
        "ExecutionCompleted",
    ]
    x = req.execution_id
    reserved, charged = moves(history, "reserve"), moves(history, "settle")
    released = moves(history, "release")
    assert [r.charge_id for r in reserved] == [f"reserve:{x}:0:1", f"reserve:{x}:1:1"]
    assert carriers(history, "reserve") == ["StepStarted", "StepStarted"]
    assert [-c.amount for c in charged] == [d.cost for d in done]
    assert all(c.uncovered == 0 for c in charged)
    assert [(r.charge_id, r.amount) for r in released] == [
        (f"release:{x}:0:1", -reserved[0].amount),
        (f"release:{x}:1:1", -reserved[1].amount),
    ]
    assert carriers(history, "release") == carriers(history, "settle") == ["StepCompleted"] * 2
    # No actual cost passed twice its estimate (this request names no duration, so its
    # transcription reserves the 600 s default; tests/api/test_estimates.py checks 2x both ways).
    assert all(d.cost <= -2 * r.amount for r, d in zip(reserved, done, strict=True))
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
    assert [-c.amount for c in moves(history, "settle")] == [500]
    assert [m.amount for m in moves(history, "release")] == [1_000]
    # The tool's own event goes first; the StepCompleted after it carries the money.
    assert carriers(history, "settle") == ["StepCompleted"]
    assert [type(e).__name__ for e in history[3:5]] == ["RunItemRecorded", "StepCompleted"]
    assert await accounts.balance(runtime, owner) == 1_000_000 - FEE - 500
    await audited(runtime, owner)


async def test_running_out_mid_flight_never_calls_the_provider_of_the_next_step(
    runtime: Runtime, providers: CountingProviders
) -> None:
    steps = [llm("Summarise."), transcribe()]
    first_input = {"text": TEXT}
    estimate = TOOLS["llm_prompt"].estimate_cost(first_input, steps[0])
    # The balance covers the fee and step 1's reservation and cost (within twice the estimate),
    # not step 2's reservation.
    owner = await funded(runtime, FEE + 2 * estimate)
    req = await request(runtime, owner, steps, [first_input, source_input()])
    await Worker(runtime).run_until_idle()

    assert providers.calls == Counter({"llm": 1})  # the transcriber was never called
    history = await runtime.store.log.history(req.execution_id)
    [done] = of_type(history, StepCompleted)
    assert done.step_index == 0
    assert [s.step_index for s in of_type(history, StepStarted)] == [0]
    assert [r.charge_id for r in moves(history, "reserve")] == [f"reserve:{req.execution_id}:0:1"]
    [refused] = of_type(history, StepFailed)
    assert (refused.step_index, refused.code, refused.retryable) == (
        1,
        "insufficient_balance",
        False,
    )
    end = history[-1]
    assert isinstance(end, ExecutionFailed)
    assert (end.code, end.http_status) == ("insufficient_balance", 402)

    assert await accounts.balance(runtime, owner) == 2 * estimate - done.cost
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
    x = req.execution_id
    released = moves(history, "release")
    assert [r.charge_id for r in released] == [f"release:{x}:0:1", f"release:{x}:0:2"]
    assert carriers(history, "release") == ["StepFailed", "StepCompleted"]
    [charged] = moves(history, "settle")
    assert charged.charge_id == billing.charge_id("settle", x, 0, 2)
    assert await accounts.balance(runtime, owner) == 1_000_000 - FEE - done.cost
    audit = await audited(runtime, owner)
    assert audit.totals["reserve"] == -audit.totals["release"]


async def test_a_step_failing_for_good_charges_nothing_but_the_fee(runtime: Runtime) -> None:
    owner = await funded(runtime, 1_000_000)
    req = await request(runtime, owner, [transcribe()], [source_input(sim={"fail": "fatal"})])
    await Worker(runtime).run_until_idle()

    history = await runtime.store.log.history(req.execution_id)
    assert [type(e).__name__ for e in history[-2:]] == ["StepFailed", "ExecutionFailed"]
    assert carriers(history, "release") == ["StepFailed"]
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
    [released] = moves(history, "release")
    assert carriers(history, "release") == ["StepFailed"]
    closed = history[released.event_index]
    assert isinstance(closed, StepFailed)
    assert closed.code == "cancelled"
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
    # The heir's first append releases the abandoned reservation (written by an older worker, as
    # a CostReserved of its own), then its StepStarted reserves its own attempt.
    assert [type(e).__name__ for e in history[4:6]] == ["CostReleased", "StepStarted"]
    [abandoned] = of_type(history, CostReleased)
    assert (abandoned.reservation, abandoned.reason) == (held.charge_id, "abandoned")
    assert [r.charge_id for r in moves(history, "release")] == [
        billing.charge_id("release", x, 0, 1),
        billing.charge_id("release", x, 0, 2),
    ]
    assert carriers(history, "reserve") == ["CostReserved", "StepStarted"]
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
    # The dead-letter closes the attempt in flight: its StepFailed releases what it held.
    assert [type(e).__name__ for e in history[-2:]] == ["StepFailed", "ExecutionFailed"]
    assert carriers(history, "release") == ["StepFailed"]
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
    [charged] = moves(history, "settle")
    assert (-charged.amount, charged.uncovered) == (estimate, 2 * estimate)
    assert await accounts.balance(runtime, owner) == 0
    audit = await audited(runtime, owner)
    assert audit.uncovered == 2 * estimate
    # The execution shows what was paid.
    body = execution_body(fold(history))
    assert body["execution"]["cost_coins"] == (FEE + estimate) / 1_000_000
