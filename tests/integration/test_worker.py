"""The worker against the store, on fakeredis and on a private real Redis.

Executions are requested directly with ``store.admission.request`` (what engine.commands does for
the API) and the worker is driven with ``run_until_idle``: no sleep decides a verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import anyio
import msgspec
import pytest

from engine.errors import ConcurrencyConflict
from engine.log.events import (
    AnyEvent,
    ExecutionCancelled,
    ExecutionCancelRequested,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    StepCompleted,
    StepFailed,
    StepRetryScheduled,
    StepSpec,
    StepStarted,
    Target,
    WorkflowSnapshot,
)
from engine.log.ids import new_execution_id, new_id
from engine.log.keys import WORKER_GROUP
from engine.log.store import EventStore
from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.settings import Settings
from engine.tools import TOOLS, StepResult, Tool, ToolContext
from tests.helpers import eventually

pytestmark = pytest.mark.anyio

FEE = 10_000


async def request(
    store: EventStore,
    steps: list[StepSpec],
    step_inputs: list[dict[str, Any]] | None = None,
    *,
    owner: str | None = None,
) -> ExecutionRequested:
    """Fund an owner and append an ExecutionRequested, as the API would."""
    owner = owner or new_id("acc")
    await store.redis.set(store.keys.balance(owner), 1_000_000)
    item_id = new_id("itm")
    inputs = step_inputs
    if inputs is None:
        inputs = [{"item_id": item_id, "source": f"https://youtu.be/{item_id[-11:]}", "lang": "en"}]
    event = ExecutionRequested(
        execution_id=new_execution_id(store.keys.partition(owner)),
        owner=owner,
        kind="transcript",
        target=Target(kind="youtube_video", item_id=item_id),
        workflow=WorkflowSnapshot(
            workflow_id=None, name="test", target_kind="youtube_video", steps=steps
        ),
        step_inputs=inputs,
        fee=FEE,
        request_id=new_id("req"),
    )
    await store.admission.request(event)
    return event


def transcribe(**params: Any) -> StepSpec:
    return StepSpec(step_id=new_id("stp"), tool_id="transcribe", params=params)


def llm(prompt: str) -> StepSpec:
    return StepSpec(step_id=new_id("stp"), tool_id="llm_prompt", prompt_text=prompt)


def of_type(events: list[AnyEvent], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def pending_count(store: EventStore, execution: ExecutionRequested) -> int:
    p = store.keys.partition(execution.owner)
    info = await store.redis.xpending(store.keys.work(p), WORKER_GROUP)
    return int(info["pending"])


async def test_one_step_transcript_completes_with_its_blob(runtime: Runtime) -> None:
    store = runtime.store
    req = await request(store, [transcribe()])
    await Worker(runtime).run_until_idle()

    history = await store.log.history(req.execution_id)
    assert [type(e).__name__ for e in history] == [
        "ExecutionRequested",
        "ExecutionStarted",
        "StepStarted",
        "StepCompleted",
        "ExecutionCompleted",
    ]
    [done] = of_type(history, StepCompleted)
    assert done.output_ref is not None
    blob = await store.blobs.get(store.keys.partition(req.owner), done.output_ref.sha256)
    assert blob is not None
    assert len(blob) == done.output_ref.size
    transcript = msgspec.json.decode(blob)
    assert set(transcript) == {"lang", "text", "segments", "origin"}
    assert transcript["origin"] == "simulated"
    assert transcript["lang"] == "en"
    assert transcript["segments"]
    assert all(s["start_ms"] < s["end_ms"] for s in transcript["segments"])
    assert done.output == {
        "kind": "transcript",
        "item_id": req.target.item_id,
        "lang": "en",
        "chars": len(transcript["text"]),
        "segments": len(transcript["segments"]),
        "sha256": done.output_ref.sha256,
    }
    assert done.cost > 0
    assert done.usage["audio_seconds"] > 0
    [completed] = of_type(history, ExecutionCompleted)
    assert completed.cost == FEE + done.cost
    assert await pending_count(store, req) == 0
    ttl = await store.redis.pttl(store.keys.execution(req.execution_id))
    assert 0 < ttl <= runtime.settings.retention_ms


async def test_provided_text_skips_the_provider(runtime: Runtime) -> None:
    store = runtime.store
    text = "Hello there. This was given by the client! Is it kept?"
    req = await request(store, [transcribe()], [{"item_id": new_id("itm"), "text": text}])
    # A provider call would fail: the test proves none is made.
    bad = replace(runtime.settings, sim_fail_rate=1.0)
    await Worker(replace(runtime, settings=bad)).run_until_idle()

    history = await store.log.history(req.execution_id)
    [done] = of_type(history, StepCompleted)
    assert done.cost == 0
    assert done.usage == {}
    assert of_type(history, StepStarted)[0].estimated_cost == 0
    assert done.output_ref is not None
    blob = await store.blobs.get(store.keys.partition(req.owner), done.output_ref.sha256)
    assert blob is not None
    transcript = msgspec.json.decode(blob)
    assert transcript["origin"] == "provided"
    assert [s["text"] for s in transcript["segments"]] == [
        "Hello there.",
        "This was given by the client!",
        "Is it kept?",
    ]
    assert of_type(history, ExecutionCompleted)[0].cost == FEE


async def test_multi_step_workflow_runs_in_order(runtime: Runtime) -> None:
    store = runtime.store
    steps = [transcribe(), llm("Summarise this transcript."), llm("Review the summary.")]
    req = await request(store, steps)
    await Worker(runtime).run_until_idle()

    history = await store.log.history(req.execution_id)
    completed = of_type(history, StepCompleted)
    assert [c.step_index for c in completed] == [0, 1, 2]
    started = of_type(history, StepStarted)
    assert [s.step_index for s in started] == [0, 1, 2]
    # Each step reads the one before it.
    assert started[1].input["previous"]["output_ref"]["sha256"] == completed[0].output_ref.sha256
    assert started[2].input["previous"]["output"] == completed[1].output
    assert completed[1].output["text"] != completed[2].output["text"]
    # Step 1 prompted over the whole transcript, loaded from its blob.
    assert completed[1].usage["prompt_tokens"] >= completed[0].output["chars"] // 4
    [end] = of_type(history, ExecutionCompleted)
    assert end.cost == FEE + sum(c.cost for c in completed)
    assert [e.seq for e in history] == list(range(1, len(history) + 1))


async def test_retryable_failures_are_retried_then_succeed(runtime: Runtime) -> None:
    store = runtime.store
    inputs = [{"item_id": new_id("itm"), "source": "s", "sim": {"fail_attempts": 2}}]
    req = await request(store, [transcribe()], inputs)
    await Worker(runtime).run_until_idle()

    history = await store.log.history(req.execution_id)
    assert [s.attempt for s in of_type(history, StepStarted)] == [1, 2, 3]
    failures = of_type(history, StepFailed)
    assert [(f.attempt, f.retryable) for f in failures] == [(1, True), (2, True)]
    retries = of_type(history, StepRetryScheduled)
    assert [r.next_attempt for r in retries] == [2, 3]
    [done] = of_type(history, StepCompleted)
    assert done.attempt == 3
    assert isinstance(history[-1], ExecutionCompleted)


async def test_exhausted_retries_fail_the_execution(runtime: Runtime) -> None:
    store = runtime.store
    inputs = [{"item_id": new_id("itm"), "source": "s", "sim": {"fail": "retryable"}}]
    req = await request(store, [transcribe()], inputs)
    await Worker(runtime).run_until_idle()

    history = await store.log.history(req.execution_id)
    attempts = TOOLS["transcribe"].retry.max_attempts
    assert len(of_type(history, StepFailed)) == attempts
    assert len(of_type(history, StepRetryScheduled)) == attempts - 1
    end = history[-1]
    assert isinstance(end, ExecutionFailed)
    assert end.code == "provider_failed"


async def test_non_retryable_failure_fails_at_once(runtime: Runtime) -> None:
    store = runtime.store
    inputs = [{"item_id": new_id("itm"), "source": "s", "sim": {"fail": "fatal"}}]
    req = await request(store, [transcribe(), llm("never runs")], inputs)
    await Worker(runtime).run_until_idle()

    history = await store.log.history(req.execution_id)
    [failed] = of_type(history, StepFailed)
    assert failed.retryable is False
    assert failed.code == "provider_rejected"
    assert of_type(history, StepRetryScheduled) == []
    assert [s.step_index for s in of_type(history, StepStarted)] == [0]
    end = history[-1]
    assert isinstance(end, ExecutionFailed)
    assert end.code == "provider_failed"
    assert await pending_count(store, req) == 0


async def test_step_timeout_ends_in_timeout(runtime: Runtime) -> None:
    store = runtime.store
    inputs = [{"item_id": new_id("itm"), "source": "s", "sim": {"hang": True}}]
    req = await request(store, [transcribe(timeout_s=0.05)], inputs)
    await Worker(runtime).run_until_idle()

    history = await store.log.history(req.execution_id)
    failures = of_type(history, StepFailed)
    assert failures
    assert all(f.code == "timeout" for f in failures)
    end = history[-1]
    assert isinstance(end, ExecutionFailed)
    assert end.code == "timeout"


async def test_a_running_steps_cancel_arrives_through_the_cancel_set(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker reads no log: the cancel append marks the execution in its partition's cancel
    set, the worker's cancel check finds it there and aborts the call in flight, and the
    execution's end clears the mark."""
    store = runtime.store
    inputs = [{"item_id": new_id("itm"), "source": "s", "sim": {"hang": True}}]
    req = await request(store, [transcribe()], inputs)
    p = store.keys.partition(req.owner)
    found: list[set[str]] = []
    ask = store.leases.cancelled

    async def cancelled(executions: Mapping[int, Sequence[str]]) -> set[str]:
        answer = await ask(executions)
        found.append(answer)
        return answer

    monkeypatch.setattr(store.leases, "cancelled", cancelled)
    async with anyio.create_task_group() as tg:
        tg.start_soon(Worker(runtime).run_until_idle)
        history = await eventually(
            lambda: store.log.history(req.execution_id),
            until=lambda h: bool(of_type(h, StepStarted)),
        )
        cancel = ExecutionCancelRequested(execution_id=req.execution_id, requested_by=req.owner)
        await store.log.append(req.execution_id, len(history), [cancel])
        assert await store.redis.smembers(store.keys.cancels(p)) == {req.execution_id.encode()}
        with anyio.fail_after(10):  # bounds a broken build; the verdict is the log below
            await eventually(
                lambda: store.log.history(req.execution_id),
                until=lambda h: isinstance(h[-1], ExecutionCancelled),
            )
    history = await store.log.history(req.execution_id)
    assert [type(e).__name__ for e in history[-3:]] == [
        "ExecutionCancelRequested",
        "StepFailed",
        "ExecutionCancelled",
    ]
    assert {req.execution_id} in found  # the check, not a log read, found the request
    assert await store.redis.smembers(store.keys.cancels(p)) == set()


async def test_cancel_aborts_a_hanging_call(runtime: Runtime) -> None:
    store = runtime.store
    inputs = [{"item_id": new_id("itm"), "source": "s", "sim": {"hang": True}}]
    req = await request(store, [transcribe(), llm("never runs")], inputs)
    worker = Worker(runtime)
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run_until_idle)
        history = await eventually(
            lambda: store.log.history(req.execution_id),
            until=lambda h: bool(of_type(h, StepStarted)),
        )
        # What engine.commands.cancel appends for the API.
        cancel = ExecutionCancelRequested(execution_id=req.execution_id, requested_by=req.owner)
        await store.log.append(req.execution_id, len(history), [cancel])
        with anyio.fail_after(10):  # bounds a broken build; the verdict is the log below
            await eventually(
                lambda: store.log.history(req.execution_id),
                until=lambda h: isinstance(h[-1], ExecutionCancelled),
            )
    history = await store.log.history(req.execution_id)
    assert [type(e).__name__ for e in history[-3:]] == [
        "ExecutionCancelRequested",
        "StepFailed",
        "ExecutionCancelled",
    ]
    failed = history[-2]
    assert isinstance(failed, StepFailed)
    # The closing StepFailed releases what the attempt's StepStarted reserved.
    [started] = of_type(history, StepStarted)
    assert failed.settlement is not None
    assert started.reserve_id is not None
    assert failed.settlement.reservation == started.reserve_id
    assert failed.settlement.released == started.estimated_cost
    assert failed.code == "cancelled"
    assert not failed.retryable
    assert of_type(history, StepCompleted) == []
    assert await pending_count(store, req) == 0


class _GateTool(Tool):
    """A tool that runs until the test opens its gate."""

    tool_id = "test_gate"
    description = "waits for the test"
    provider_kind = "llm"

    def __init__(self) -> None:
        self.entered = anyio.Event()
        self.gate = anyio.Event()

    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        return 0

    async def run(self, ctx: ToolContext) -> StepResult:
        self.entered.set()
        await self.gate.wait()
        return StepResult(output={"kind": "gate", "attempt": ctx.attempt}, cost=1)


@pytest.fixture
def slow_heartbeat(settings: Settings) -> Settings:
    # The stale worker must discover its loss through its own late append, not a heartbeat.
    return replace(settings, heartbeat_ms=60_000, lease_ms=180_000)


async def test_stale_worker_late_append_is_refused(
    runtime: Runtime, slow_heartbeat: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = runtime.store
    gate = _GateTool()
    monkeypatch.setitem(TOOLS, gate.tool_id, gate)
    req = await request(store, [StepSpec(step_id=new_id("stp"), tool_id="test_gate")], [{}])
    p = store.keys.partition(req.owner)
    stale = Worker(replace(runtime, settings=slow_heartbeat), worker_id="stale")
    async with anyio.create_task_group() as tg:
        tg.start_soon(stale.run_until_idle)
        await gate.entered.wait()
        # Another worker takes the lease over (epoch 2) and restarts the step.
        claimed = await store.leases.claim_expired(p, "thief", min_idle_ms=0)
        [trigger] = [c for c in claimed if isinstance(c.event, ExecutionRequested)]
        assert trigger.deliveries == 2
        seq = len(await store.log.history(req.execution_id))
        thief_step = StepStarted(
            execution_id=req.execution_id, step_index=0, attempt=2, epoch=2, worker_id="thief"
        )
        await store.log.append(req.execution_id, seq, [thief_step])
        gate.gate.set()  # the stale worker's call returns; its append must be refused
    history = await store.log.history(req.execution_id)
    assert [type(e).__name__ for e in history] == [
        "ExecutionRequested",
        "ExecutionStarted",
        "StepStarted",
        "StepStarted",
    ]
    assert stale.in_flight == 0
    # The lease stays with the thief: the stale worker acknowledged nothing.
    pending = await store.redis.xpending_range(store.keys.work(p), WORKER_GROUP, "-", "+", 10)
    assert trigger.entry_id in {x["message_id"].decode() for x in pending}
    assert {x["consumer"] for x in pending} == {b"thief"}
    with pytest.raises(ConcurrencyConflict):
        await store.log.append(req.execution_id, 3, [thief_step])


async def test_redelivered_entry_of_a_finished_execution_changes_nothing(
    runtime: Runtime,
) -> None:
    # A worker whose terminal append was written but whose lease was never acknowledged (it died
    # before a batch of acks went out): the next delivery appends nothing and only acknowledges.
    store = runtime.store
    req = await request(store, [transcribe()])
    p = store.keys.partition(req.owner)
    [lease] = (await store.leases.dispatch({p: 10}, "first"))[p]
    entry = lease.entry
    x = req.execution_id
    await store.log.append(
        x,
        1,
        [
            ExecutionStarted(execution_id=x, worker_id="first", epoch=1),
            StepStarted(execution_id=x, step_index=0, attempt=1, epoch=1, worker_id="first"),
            StepCompleted(execution_id=x, step_index=0, attempt=1, output={"text": "hi"}),
            ExecutionCompleted(execution_id=x, cost=FEE),
        ],
    )
    before = await store.log.history(x)
    await store.leases.hand_back(p, "first", [entry.entry_id])

    await Worker(runtime, worker_id="second").run_until_idle()
    assert await store.log.history(x) == before
    assert await pending_count(store, req) == 0


async def test_takeover_continues_after_the_last_completed_step(runtime: Runtime) -> None:
    store = runtime.store
    req = await request(store, [transcribe(), llm("Summarise."), llm("Review.")])
    p = store.keys.partition(req.owner)
    # A worker that died after step 0 completed and step 1 started.
    [lease] = (await store.leases.dispatch({p: 10}, "dead"))[p]
    entry = lease.entry
    await Worker(runtime, worker_id="helper").run_until_idle()  # nothing to do: lease is held
    assert len(await store.log.history(req.execution_id)) == 1
    x = req.execution_id
    await store.log.append(
        x,
        1,
        [
            ExecutionStarted(execution_id=x, worker_id="dead", epoch=1),
            StepStarted(execution_id=x, step_index=0, attempt=1, epoch=1, worker_id="dead"),
            StepCompleted(execution_id=x, step_index=0, attempt=1, output={"text": "hi there"}),
            StepStarted(execution_id=x, step_index=1, attempt=1, epoch=1, worker_id="dead"),
        ],
    )
    await store.leases.hand_back(p, "dead", [entry.entry_id])
    await Worker(runtime, worker_id="heir").run_until_idle()

    history = await store.log.history(x)
    assert isinstance(history[-1], ExecutionCompleted)
    assert [c.step_index for c in of_type(history, StepCompleted)] == [0, 1, 2]
    restarted = of_type(history, StepStarted)[2:]
    assert [(s.step_index, s.attempt, s.epoch) for s in restarted] == [(1, 2, 2), (2, 1, 2)]


async def test_dead_letter_after_max_deliveries(runtime: Runtime) -> None:
    store = runtime.store
    req = await request(store, [transcribe()])
    p = store.keys.partition(req.owner)
    [lease] = (await store.leases.dispatch({p: 10}, "crashy"))[p]
    entry = lease.entry
    # Every delivery so far ended in a crash (the delivery count is the only trace).
    for _ in range(runtime.settings.max_deliveries - 1):
        await store.leases.claim_expired(p, "crashy", min_idle_ms=0)
    await store.leases.hand_back(p, "crashy", [entry.entry_id])

    await Worker(runtime).run_until_idle()
    history = await store.log.history(req.execution_id)
    assert [type(e).__name__ for e in history] == ["ExecutionRequested", "ExecutionFailed"]
    failed = history[-1]
    assert isinstance(failed, ExecutionFailed)
    assert failed.code == "internal"
    assert "dead-lettered" in failed.message
    [dead] = await store.leases.dead_letters(p)
    assert dead["entry_id"] == entry.entry_id
    assert int(dead["deliveries"]) == runtime.settings.max_deliveries + 1
    assert await pending_count(store, req) == 0


async def test_the_worker_leaves_the_logs_to_the_projectors(runtime: Runtime) -> None:
    """Nothing of the partition log concerns the worker: an undecodable entry there (the
    projector counts and skips it) is neither read nor dead-lettered, and the work goes on."""
    store = runtime.store
    await store.redis.xadd(store.keys.log(2), {"e": b"{not json"})
    req = await request(store, [transcribe()])
    await Worker(runtime).run_until_idle()
    assert isinstance((await store.log.history(req.execution_id))[-1], ExecutionCompleted)
    assert await store.leases.dead_letters(2) == []
    for p in store.partitions:
        assert await store.redis.xinfo_groups(store.keys.log(p)) == []


async def test_graceful_stop_hands_back_unfinished_work(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = runtime.store
    gate = _GateTool()
    monkeypatch.setitem(TOOLS, gate.tool_id, gate)
    steps = [transcribe(), StepSpec(step_id=new_id("stp"), tool_id="test_gate")]
    req = await request(store, steps)
    p = store.keys.partition(req.owner)
    worker = Worker(runtime, worker_id="leaving")
    stop = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(worker.run, stop)
        await gate.entered.wait()
        stop.set()  # SIGTERM: the gate never opens, so the grace period runs out
    assert worker.in_flight == 0
    # The lease is claimable at once (no lease timeout to wait for) and step 0 stays done.
    claimed = await store.leases.claim_expired(p, "next", min_idle_ms=runtime.settings.lease_ms)
    assert [c.entry_id for c in claimed if isinstance(c.event, ExecutionRequested)] != []
    await store.leases.hand_back(p, "next", [c.entry_id for c in claimed])
    gate.gate.set()
    await Worker(runtime, worker_id="next").run_until_idle()
    history = await store.log.history(req.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    assert [c.step_index for c in of_type(history, StepCompleted)] == [0, 1]
    assert [(s.step_index, s.attempt) for s in of_type(history, StepStarted)] == [
        (0, 1),
        (1, 1),
        (1, 2),
    ]


class _RecordingTool(Tool):
    """Records the owner of every execution it runs, in order."""

    tool_id = "test_record"
    description = "records the dispatch order"
    provider_kind = "llm"

    def __init__(self) -> None:
        self.owners: list[str] = []

    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        return 0

    async def run(self, ctx: ToolContext) -> StepResult:
        self.owners.append(ctx.owner)
        return StepResult(output={})


async def test_one_owners_flood_does_not_starve_another(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = runtime.store
    recorder = _RecordingTool()
    monkeypatch.setitem(TOOLS, recorder.tool_id, recorder)
    steps = [StepSpec(step_id=new_id("stp"), tool_id="test_record")]
    flood, single = new_id("acc"), new_id("acc")
    for _ in range(6):
        await request(store, steps, [{}], owner=flood)
    await request(store, steps, [{}], owner=single)
    one_at_a_time = replace(runtime.settings, worker_concurrency=1)
    await Worker(replace(runtime, settings=one_at_a_time)).run_until_idle()
    assert sorted(recorder.owners) == sorted([flood] * 6 + [single])
    # Round-robin by owner: the single execution runs second, not after the whole flood.
    assert recorder.owners.index(single) <= 1


async def test_redis_failing_under_a_tool_is_a_retryable_failure(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blob read that meets Redis down (a failover, a restart) fails the attempt retryably:
    the execution goes on once Redis answers, where it used to end ``error`` (``internal``).
    The blob is a transcript another execution made (a drive reads the blobs it made itself
    from memory, so only one it did not make goes to Redis)."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    store = runtime.store
    owner = new_id("acc")
    transcript = msgspec.json.encode(
        {"lang": "en", "text": "Hello there.", "segments": [], "origin": "simulated"}
    )
    sha256 = hashlib.sha256(transcript).hexdigest()
    await store.blobs.put(store.keys.partition(owner), sha256, transcript)
    inputs = [{"transcript_ref": {"sha256": sha256}}]
    review = StepSpec(step_id=new_id("stp"), tool_id="summary_review")
    req = await request(store, [review], inputs, owner=owner)
    real_get = store.blobs.get
    failures = [RedisConnectionError("Connection refused")]

    async def flaky_get(partition: int, sha256: str) -> bytes | None:
        if failures:
            raise failures.pop()
        return await real_get(partition, sha256)

    monkeypatch.setattr(store.blobs, "get", flaky_get)
    await Worker(runtime).run_until_idle()

    history = await store.log.history(req.execution_id)
    [failed] = of_type(history, StepFailed)
    assert (failed.step_index, failed.code, failed.retryable) == (0, "unavailable", True)
    assert [c.step_index for c in of_type(history, StepCompleted)] == [0]
    assert isinstance(history[-1], ExecutionCompleted)
    assert not failures  # the injected failure was met
