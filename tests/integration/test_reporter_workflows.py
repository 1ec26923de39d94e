"""Reporter workflows through the worker and the projector, on both backends: per-item
executions where one item fails without losing the others, every item failing, retries and
timeouts inside a collection. Verdicts come from the event log and the projected view."""

from __future__ import annotations

from typing import Any

import pytest

from engine import commands
from engine.log.events import (
    AnyEvent,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    StepCompleted,
    StepFailed,
    StepSpec,
    StepStarted,
    Target,
    WorkflowSnapshot,
)
from engine.log.ids import new_execution_id, new_id
from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.tools.catalog import check_step
from projections.projector import Projector
from tests.rendered import RenderedQueries

pytestmark = pytest.mark.anyio

STEPS = [
    StepSpec(step_id="stp_t", tool_id="transcribe"),
    StepSpec(step_id="stp_s", tool_id="llm_prompt", prompt_text="Summarise"),
]


async def collection_request(
    runtime: Runtime,
    n_items: int,
    overrides: dict[int, dict[str, Any]] | None = None,
    steps: list[StepSpec] | None = None,
    step_overrides: dict[int, dict[str, Any]] | None = None,
) -> ExecutionRequested:
    """Append a process_collection request shaped as engine.commands builds it; ``overrides``
    maps an item index to the simulated providers' test hook for every step of that item,
    ``step_overrides`` a (flat) step index to the hook for that step only."""
    store = runtime.store
    owner = new_id("acc")
    await store.redis.set(store.keys.balance(owner), 10_000_000)
    base = steps or STEPS
    specs: list[StepSpec] = []
    inputs: list[dict[str, Any]] = []
    for i in range(n_items):
        item_id = new_id("itm")
        for k, spec in enumerate(base):
            specs.append(spec)
            step_input: dict[str, Any] = {
                "item_id": item_id,
                "item_type": "youtube_video",
                "source": f"https://youtu.be/{item_id[-11:]}",
                "external_id": item_id[-11:],
                "item_index": i,
                "item_step": k,
            }
            if overrides and i in overrides:
                step_input["sim"] = overrides[i]
            if step_overrides and len(inputs) in step_overrides:
                step_input["sim"] = step_overrides[len(inputs)]
            inputs.append(step_input)
    event = ExecutionRequested(
        execution_id=new_execution_id(store.keys.partition(owner)),
        owner=owner,
        kind="process_collection",
        target=Target(kind="collection", collection_id=new_id("col")),
        workflow=WorkflowSnapshot(
            workflow_id=new_id("wf"), name="w", target_kind="collection", steps=specs
        ),
        step_inputs=inputs,
        fee=runtime.settings.fees.process_collection,
        request_id=new_id("req"),
        reporter_id=new_id("rep"),
    )
    await store.admission.request(event)
    return event


def of_type(events: list[AnyEvent], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def detail(runtime: Runtime, req: ExecutionRequested) -> dict[str, Any]:
    await Projector(runtime).run_until_idle()
    found = await RenderedQueries(runtime).get_execution(req.owner, req.execution_id)
    assert found is not None
    return found


async def test_one_failed_item_is_recorded_and_the_others_keep_their_results(
    runtime: Runtime,
) -> None:
    req = await collection_request(runtime, 3, overrides={1: {"fail": "fatal"}})
    await Worker(runtime).run_until_idle()

    history = await runtime.store.log.history(req.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    started = [e.step_index for e in of_type(history, StepStarted)]
    assert started == [0, 1, 2, 4, 5]  # item 1's summary (step 3) was skipped, never started
    assert sorted(e.step_index for e in of_type(history, StepCompleted)) == [0, 1, 4, 5]
    [failed] = of_type(history, StepFailed)
    assert (failed.step_index, failed.retryable) == (2, False)

    body = await detail(runtime, req)
    assert body["execution"]["status"] == "done"
    items = body["items"]
    assert [(i["item_index"], i["status"]) for i in items] == [
        (0, "done"),
        (1, "error"),
        (2, "done"),
    ]
    assert items[1]["error"]["code"] == "provider_rejected"
    assert (items[1]["steps_done"], items[1]["steps_skipped"]) == (0, 1)
    assert items[0]["output"]["kind"] == "completion"
    assert items[2]["output"]["kind"] == "completion"
    assert items[1]["output"] is None
    # The summary of item 2 read item 2's transcript, not item 1's failure: its start names step
    # 4 as the step before it, and its summary shows the prompt that transcript made.
    [start] = [e for e in of_type(history, StepStarted) if e.step_index == 5]
    assert start.input["previous"]["step_index"] == 4
    summary = next(s for s in body["steps"] if s["step_index"] == 5)
    assert summary["input"]["prompt"].startswith("Summarise\n\n")


async def test_a_failure_in_a_later_step_keeps_the_items_earlier_output(runtime: Runtime) -> None:
    steps = [*STEPS, StepSpec(step_id="stp_x", tool_id="llm_prompt", prompt_text="More")]
    # Item 0's last step (flat index 2) fails for good.
    req = await collection_request(runtime, 2, steps=steps, step_overrides={2: {"fail": "fatal"}})
    await Worker(runtime).run_until_idle()
    body = await detail(runtime, req)
    assert body["execution"]["status"] == "done"
    items = body["items"]
    assert [(i["status"], i["steps_done"]) for i in items] == [("error", 2), ("done", 3)]
    assert items[0]["steps_skipped"] == 0
    by_index = {s["step_index"]: s for s in body["steps"]}
    assert by_index[0]["output"]["kind"] == "transcript"
    assert by_index[1]["output"]["kind"] == "completion"
    assert by_index[2]["status"] == "error"


async def test_every_item_failing_ends_the_execution_in_error(runtime: Runtime) -> None:
    req = await collection_request(
        runtime, 2, overrides={0: {"fail": "fatal"}, 1: {"fail": "fatal"}}
    )
    await Worker(runtime).run_until_idle()
    history = await runtime.store.log.history(req.execution_id)
    end = history[-1]
    assert isinstance(end, ExecutionFailed)
    assert end.code == "provider_failed"
    assert "every item failed" in end.message
    body = await detail(runtime, req)
    assert body["execution"]["status"] == "error"
    assert [i["status"] for i in body["items"]] == ["error", "error"]


async def test_a_retried_item_step_succeeds_and_counts_its_attempts(runtime: Runtime) -> None:
    req = await collection_request(
        runtime, 2, overrides={0: {"fail_attempts": 2, "retry_after_ms": 1}}
    )
    await Worker(runtime).run_until_idle()
    history = await runtime.store.log.history(req.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    body = await detail(runtime, req)
    attempts = {s["step_index"]: s["attempts"] for s in body["steps"]}
    assert attempts[0] == 3  # two retryable failures, then the third attempt
    assert attempts[2] == 1
    assert [i["status"] for i in body["items"]] == ["done", "done"]


async def test_a_hanging_provider_times_out_and_fails_only_its_item(runtime: Runtime) -> None:
    steps = [StepSpec(step_id="stp_t", tool_id="transcribe", params={"timeout_s": 0.05})]
    req = await collection_request(
        runtime, 2, overrides={0: {"hang": True, "retry_after_ms": 1}}, steps=steps
    )
    await Worker(runtime).run_until_idle()
    history = await runtime.store.log.history(req.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    failures = of_type(history, StepFailed)
    assert failures
    assert {f.code for f in failures} == {"timeout"}
    assert {f.step_index for f in failures} == {0}
    body = await detail(runtime, req)
    assert [i["status"] for i in body["items"]] == ["error", "done"]
    assert body["items"][0]["error"]["code"] == "timeout"


async def test_commands_expand_a_collection_request_in_item_order(runtime: Runtime) -> None:
    """engine.commands' snapshot: the workflow's steps once per item, inputs naming the item."""
    from engine.money.accounts import create_account
    from engine.resources import collections, reporters
    from engine.resources.items import create_item
    from engine.resources.reporters import StepInput

    account, _ = await create_account(runtime, name="a", coins_micro=1_000_000)
    owner = account.account_id
    rep = await reporters.create_reporter(runtime, owner, {"name": "r"})
    wf = await reporters.create_workflow(
        runtime,
        owner,
        rep.reporter_id,
        {"name": "w", "target_kind": "collection"},
        [StepInput(tool_id="transcribe"), StepInput(tool_id="llm_prompt", prompt_text="S")],
        check_step=check_step,
    )
    col = await collections.create_collection(runtime, owner, {"name": "c"})
    made = []
    for source in ("https://youtu.be/dQw4w9WgXcQ", "https://www.youtube.com/@clipstream"):
        item = await create_item(runtime, owner, source)
        await collections.add_item(runtime, owner, col.collection_id, item.item_id)
        made.append(item.item_id)
    accepted = await commands.request_process_collection(
        runtime,
        owner,
        rep.reporter_id,
        collection_id=col.collection_id,
        workflow_id=wf.workflow_id,
        max_items=None,
        request_id=new_id("req"),
    )
    event = accepted.event
    assert event is not None
    assert [s.tool_id for s in event.workflow.steps] == ["transcribe", "llm_prompt"] * 2
    assert [(i["item_id"], i["item_index"], i["item_step"]) for i in event.step_inputs] == [
        (made[0], 0, 0),
        (made[0], 0, 1),
        (made[1], 1, 0),
        (made[1], 1, 1),
    ]
    assert event.reporter_id == rep.reporter_id
    assert event.fee == runtime.settings.fees.process_collection
