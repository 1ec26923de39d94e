"""Worker processes killed mid-step (real Redis only): another worker finishes the work, and
durable steps never run twice."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from engine import plan
from engine.events import (
    AnyEvent,
    CostCharged,
    CostReleased,
    ExecutionCompleted,
    ExecutionRequested,
    StepCompleted,
    StepSpec,
    StepStarted,
    Target,
    WorkflowSnapshot,
)
from engine.ids import new_execution_id, new_id
from engine.runtime import Runtime
from engine.settings import Settings
from tests.helpers import eventually
from tests.processes import Role, role_env
from tests.servers import RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.slow]

SLOW_STEP_MS = 5_000  # long enough that the kill always lands inside the call


async def _request(runtime: Runtime) -> ExecutionRequested:
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
            {"sim": {"latency_ms": SLOW_STEP_MS}},
        ],
        fee=10_000,
        request_id=new_id("req"),
    )
    await store.request(event)
    return event


def _step_started(history: list[AnyEvent], index: int) -> bool:
    return any(isinstance(e, StepStarted) and e.step_index == index for e in history)


async def test_killed_worker_mid_step_is_taken_over(
    real_redis_server: RedisServer, tmp_path: Path
) -> None:
    prefix = f"chaos{new_id('req')[-6:]}:"
    env = role_env(real_redis_server.url, CLIPSTREAM_PREFIX=prefix)
    settings = replace(Settings.from_env(env), partitions_explicit=True)
    runtime = await Runtime.open(settings)
    first: Role | None = None
    second: Role | None = None
    try:
        executions = [await _request(runtime) for _ in range(3)]
        ids = [x.execution_id for x in executions]
        owners = {x.execution_id: x.owner for x in executions}
        first = Role(["worker"], env, tmp_path / "first.log")
        # Every execution is inside its slow second step: step 0 is completed and durable.
        await eventually(
            lambda: runtime.store.histories(ids),
            until=lambda hs: all(_step_started(h, 1) for h in hs.values()),
        )
        first.kill()
        before = await runtime.store.histories(ids)
        assert not any(isinstance(h[-1], ExecutionCompleted) for h in before.values())

        second = Role(["worker"], env, tmp_path / "second.log")
        with anyio.fail_after(90):
            done = await eventually(
                lambda: runtime.store.histories(ids),
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
            # Step 0 ran once, before the kill; step 1 was restarted under a newer lease.
            starts = [e for e in history if isinstance(e, StepStarted)]
            assert [s.step_index for s in starts if s.step_index == 0] == [0]
            restarted = [s for s in starts if s.step_index == 1]
            assert [s.attempt for s in restarted] == [1, 2]
            assert restarted[1].epoch > restarted[0].epoch
            assert restarted[1].worker_id != restarted[0].worker_id
            # The killed attempt's reservation was released by the heir; the owner paid the fee
            # and the settled costs, nothing more.
            released = [e for e in history if isinstance(e, CostReleased)]
            assert [(r.step_index, r.attempt, r.reason) for r in released if r.step_index == 1] == [
                (1, 1, "abandoned"),
                (1, 2, "settled"),
            ]
            assert plan.fold(history).held == {}
            charged = sum(e.amount for e in history if isinstance(e, CostCharged))
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
