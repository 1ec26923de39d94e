"""Reporter outputs land as documents, on both backends: the worker publishes one document per
document-making step in the append of its StepCompleted, keyed by execution and step, so neither a
retried append, a second publication nor a takeover makes a second one (and a takeover publishes
what an older worker appended without its document)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import msgspec
import pytest

from engine.errors import ConcurrencyConflict
from engine.log.event_log import AppendOp
from engine.log.events import (
    AnyEvent,
    ExecutionCompleted,
    ExecutionRequested,
    ExecutionStarted,
    StepCompleted,
    StepSpec,
    StepStarted,
    Target,
    WorkflowSnapshot,
)
from engine.log.ids import is_id, new_execution_id, new_id
from engine.resources.documents import (
    content_of,
    document_id,
    document_record,
    list_documents,
    publish_document,
)
from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.settings import Settings
from tests.helpers import eventually

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, lease_ms=500, heartbeat_ms=150, claim_interval_ms=100)


async def _request(runtime: Runtime, n_summaries: int = 2) -> ExecutionRequested:
    store = runtime.store
    owner = new_id("acc")
    await store.redis.set(store.keys.balance(owner), 10_000_000)
    item_id = new_id("itm")
    steps = [StepSpec(step_id="stp_t", tool_id="transcribe")] + [
        StepSpec(step_id=f"stp_{k}", tool_id="llm_prompt", prompt_text=f"Prompt {k}")
        for k in range(n_summaries)
    ]
    event = ExecutionRequested(
        execution_id=new_execution_id(store.keys.partition(owner)),
        owner=owner,
        kind="process",
        target=Target(kind="youtube_video", item_id=item_id),
        workflow=WorkflowSnapshot(
            workflow_id=new_id("wf"), name="w", target_kind="youtube_video", steps=steps
        ),
        step_inputs=[{"item_id": item_id, "source": "https://youtu.be/dQw4w9WgXcQ"}] * len(steps),
        fee=10_000,
        request_id=new_id("req"),
        reporter_id=new_id("rep"),
    )
    accepted = await store.admission.request(event)
    assert accepted.event is not None
    return accepted.event


async def _documents(runtime: Runtime, req: ExecutionRequested) -> list[Any]:
    return await list_documents(
        runtime, req.owner, limit=100, below=None, reporter_id=req.reporter_id
    )


async def test_each_document_step_makes_one_document(runtime: Runtime) -> None:
    req = await _request(runtime)
    await Worker(runtime).run_until_idle()
    history = await runtime.store.log.history(req.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    completions = [e for e in history if isinstance(e, StepCompleted) and e.step_index > 0]

    docs = await _documents(runtime, req)
    # Newest first; ids derive from the execution and sort by step.
    assert [d.document_id for d in docs] == [document_id(req, 2), document_id(req, 1)]
    assert all(is_id(d.document_id, "doc") for d in docs)
    for doc, step in zip(reversed(docs), completions, strict=True):
        assert (doc.kind, doc.execution_id) == ("completion", req.execution_id)
        assert doc.item_id == req.target.item_id
        content = await content_of(runtime, req.owner, doc)
        assert content is not None
        # The completion's blob: the output, with what was sent whole.
        whole = msgspec.json.decode(content)
        head = step.output["sent"]
        assert {**whole, "sent": head} == step.output
        assert whole["sent"]["prompt"][: len(head["prompt"])] == head["prompt"]
        assert len(whole["sent"]["prompt"]) == head["prompt_chars"]
    by_item = await list_documents(
        runtime, req.owner, limit=100, below=None, item_id=req.target.item_id
    )
    assert {d.document_id for d in by_item} == {d.document_id for d in docs}
    # The transcript is not a stored document (the projector derives transcripts).
    assert all(d.kind != "transcript" for d in docs)

    # Publishing again (a retried write) changes nothing.
    assert await publish_document(runtime, req, completions[0]) is None
    assert len(await _documents(runtime, req)) == 2


async def test_a_takeover_publishes_what_a_dead_worker_did_not(runtime: Runtime) -> None:
    """The dead worker appended step 1's StepCompleted and died before its document."""
    store = runtime.store
    output = {"kind": "completion", "text": "written before the crash", "model": "sim-1"}
    req2 = await _request(runtime)
    p = store.keys.partition(req2.owner)
    await store.leases.dispatch({p: 10}, "dead")  # the dead worker's lease (delivery 1)
    dead: list[AnyEvent] = [
        ExecutionStarted(execution_id=req2.execution_id, worker_id="dead", epoch=1),
        StepStarted(
            execution_id=req2.execution_id, step_index=0, attempt=1, epoch=1, worker_id="dead"
        ),
        StepCompleted(execution_id=req2.execution_id, step_index=0, attempt=1),
        StepStarted(
            execution_id=req2.execution_id, step_index=1, attempt=1, epoch=1, worker_id="dead"
        ),
        StepCompleted(execution_id=req2.execution_id, step_index=1, attempt=1, output=output),
    ]
    await store.log.append(req2.execution_id, 1, dead)
    assert await _documents(runtime, req2) == []

    async def one_pass() -> list[Any]:
        await Worker(runtime, worker_id="heir").run_until_idle()
        return await store.log.history(req2.execution_id)

    history = await eventually(one_pass, until=lambda h: isinstance(h[-1], ExecutionCompleted))
    assert [e.step_index for e in history if isinstance(e, StepStarted)] == [0, 1, 2]
    docs = await _documents(runtime, req2)
    assert sorted(d.document_id for d in docs) == sorted(
        [document_id(req2, 1), document_id(req2, 2)]
    )


async def test_a_step_appended_with_its_document_is_published_once_after_a_takeover(
    runtime: Runtime,
) -> None:
    """The dead worker's append carried step 1's StepCompleted and its document (one script);
    the heir, publishing again after the takeover, and a retry of that append write no second."""
    store = runtime.store
    output = {"kind": "completion", "text": "written before the crash", "model": "sim-1"}
    req = await _request(runtime)
    xid = req.execution_id
    p = store.keys.partition(req.owner)
    await store.leases.dispatch({p: 10}, "dead")
    head: list[AnyEvent] = [
        ExecutionStarted(execution_id=xid, worker_id="dead", epoch=1),
        StepStarted(execution_id=xid, step_index=0, attempt=1, epoch=1, worker_id="dead"),
        StepCompleted(execution_id=xid, step_index=0, attempt=1),
        StepStarted(execution_id=xid, step_index=1, attempt=1, epoch=1, worker_id="dead"),
    ]
    await store.log.append(xid, 1, head)
    done = StepCompleted(execution_id=xid, step_index=1, attempt=1, output=output, at=1_000)
    made = document_record(runtime, req, done)
    assert made is not None
    record, blob = made
    assert blob is not None  # an inline output: its content is stored by the same append
    op = AppendOp(xid, 5, [done], blobs=[blob], owner=req.owner, records=[record])
    [first, retried] = await store.log.append_many([op, op])
    assert isinstance(first, list)
    assert isinstance(retried, ConcurrencyConflict)
    [doc] = await _documents(runtime, req)
    assert (doc.document_id, doc.created_at) == (document_id(req, 1), 1_000)
    assert msgspec.json.decode(await content_of(runtime, req.owner, doc) or b"") == output

    async def one_pass() -> list[Any]:
        await Worker(runtime, worker_id="heir").run_until_idle()
        return await store.log.history(xid)

    history = await eventually(one_pass, until=lambda h: isinstance(h[-1], ExecutionCompleted))
    assert [e.step_index for e in history if isinstance(e, StepStarted)] == [0, 1, 2]
    docs = await _documents(runtime, req)
    assert sorted(d.document_id for d in docs) == [document_id(req, 1), document_id(req, 2)]
    assert next(d for d in docs if d.document_id == document_id(req, 1)) == doc
    assert (
        await store.redis.zcard(store.keys.resource(req.owner, "itemdocs", doc.item_id or "")) == 2
    )
