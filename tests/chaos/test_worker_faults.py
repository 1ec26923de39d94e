"""Worker processes SIGKILLed inside each step in turn (real Redis only): another worker finishes
the work, completed steps never run again, and their outputs are the ones recorded before the
kill."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from engine.log.events import (
    AnyEvent,
    CostReleased,
    ExecutionCompleted,
    ExecutionRequested,
    StepCompleted,
    StepSpec,
    StepStarted,
    Target,
    WorkflowSnapshot,
)
from engine.log.ids import new_execution_id, new_id
from engine.money import billing
from engine.run import plan
from engine.runtime import Runtime
from engine.settings import Settings
from tests.helpers import eventually
from tests.processes import Role, role_env
from tests.servers import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

SLOW_STEP_MS = 5_000  # long enough that the kill always lands inside the call


async def _request(runtime: Runtime, slow_step: int) -> ExecutionRequested:
    store = runtime.store
    owner = new_id("acc")
    await store.redis.set(store.keys.balance(owner), 1_000_000)
    steps = [
        StepSpec(step_id=new_id("stp"), tool_id="transcribe"),
        StepSpec(step_id=new_id("stp"), tool_id="llm_prompt", prompt_text="Summarise."),
        StepSpec(step_id=new_id("stp"), tool_id="llm_prompt", prompt_text="Review."),
    ]
    item = new_id("itm")
    event = ExecutionRequested(
        execution_id=new_execution_id(store.keys.partition(owner)),
        owner=owner,
        kind="process",
        target=Target(kind="youtube_video", item_id=item),
        workflow=WorkflowSnapshot(workflow_id=None, name="chaos", target_kind="x", steps=steps),
        step_inputs=[
            {"item_id": item, "source": f"https://youtu.be/{item[-11:]}"},
            {},
            {},
        ],
        fee=10_000,
        request_id=new_id("req"),
    )
    for index, step_input in enumerate(event.step_inputs):
        step_input["sim"] = {"latency_ms": SLOW_STEP_MS if index == slow_step else 0}
    await store.admission.request(event)
    return event


def _outputs(history: list[AnyEvent]) -> dict[int, dict[str, Any]]:
    return {e.step_index: e.output for e in history if isinstance(e, StepCompleted)}


def _step_started(history: list[AnyEvent], index: int) -> bool:
    return any(isinstance(e, StepStarted) and e.step_index == index for e in history)


@pytest.mark.parametrize("killed_in", [0, 1, 2], ids=["step0", "step1", "step2"])
async def test_killed_worker_mid_step_is_taken_over(
    real_redis_server: RedisServer, tmp_path: Path, killed_in: int
) -> None:
    prefix = f"chaos{new_id('req')[-6:]}:"
    env = role_env(real_redis_server.url, CLIPSTREAM_PREFIX=prefix)
    settings = replace(Settings.from_env(env), partitions_explicit=True)
    runtime = await Runtime.open(settings)
    first: Role | None = None
    second: Role | None = None
    try:
        executions = [await _request(runtime, killed_in) for _ in range(3)]
        ids = [x.execution_id for x in executions]
        owners = {x.execution_id: x.owner for x in executions}
        first = Role(["worker"], env, tmp_path / "first.log")
        # Every execution is inside its slow step: the steps before it are completed and durable.
        await eventually(
            lambda: runtime.store.log.histories(ids),
            until=lambda hs: all(_step_started(h, killed_in) for h in hs.values()),
        )
        first.kill()
        before = await runtime.store.log.histories(ids)
        assert not any(isinstance(h[-1], ExecutionCompleted) for h in before.values())
        recorded = {xid: _outputs(h) for xid, h in before.items()}
        assert all(sorted(r) == list(range(killed_in)) for r in recorded.values())

        second = Role(["worker"], env, tmp_path / "second.log")
        with anyio.fail_after(90):
            done = await eventually(
                lambda: runtime.store.log.histories(ids),
                until=lambda hs: all(isinstance(h[-1], ExecutionCompleted) for h in hs.values()),
                deadline_s=80,
            )
        for xid, history in done.items():
            assert [e.seq for e in history] == list(range(1, len(history) + 1)), xid
            completed = [e for e in history if isinstance(e, StepCompleted)]
            assert sorted(c.step_index for c in completed) == [0, 1, 2], xid
            for c in completed:
                later = history[c.seq :]
                assert not any(
                    isinstance(e, StepStarted) and e.step_index == c.step_index for e in later
                ), f"{xid}: step {c.step_index} started again after it completed"
            # The steps before the kill ran once and kept their outputs; the step in flight was
            # restarted under a newer lease by the other worker; the steps after it ran once.
            starts = [e for e in history if isinstance(e, StepStarted)]
            for index in range(3):
                runs = [s for s in starts if s.step_index == index]
                assert [s.attempt for s in runs] == ([1, 2] if index == killed_in else [1]), xid
            restarted = [s for s in starts if s.step_index == killed_in]
            assert restarted[1].epoch > restarted[0].epoch
            assert restarted[1].worker_id != restarted[0].worker_id
            outputs = _outputs(history)
            assert {i: outputs[i] for i in recorded[xid]} == recorded[xid]
            # The killed attempt's reservation was released by the heir; the owner paid the fee
            # and the settled costs, nothing more.
            released = [e for e in history if isinstance(e, CostReleased)]
            assert [
                (r.step_index, r.attempt, r.reason) for r in released if r.step_index == killed_in
            ] == [(killed_in, 1, "abandoned")]
            # The heir's attempt settled its own reservation on its StepCompleted.
            [redone] = [
                e for e in history if isinstance(e, StepCompleted) and e.step_index == killed_in
            ]
            assert redone.attempt == 2
            assert redone.settlement is not None
            assert redone.settlement.reservation == f"reserve:{xid}:{killed_in}:2"
            assert plan.fold(history).held == {}
            charged = -sum(
                m.amount for e in history for m in billing.move_of(e) if m.kind == "settle"
            )
            owner = owners[xid]
            assert (
                await runtime.store.redis.get(runtime.store.keys.balance(owner))
                == str(1_000_000 - 10_000 - charged).encode()
            )
    finally:
        for role in (first, second):
            if role is not None:
                role.terminate()
        await runtime.close()
