"""What an execution request looks like: the ``ExecutionRequested`` of each kind, built from what
the caller has already read and checked. Pure: no Redis, no clock, no ids drawn here.

engine.commands (what the API calls), engine.schedules.runs (a run) and engine.schedules.pick (the
executions a run starts) build their requests with these, so a "process an item" request is
written once.

Idempotency: the store keeps ``sha256(key)`` -> ``fingerprint``, where the fingerprint is
``sha256`` of the command, its target and its canonical parameters (sorted-key JSON of the decoded
body), so the same request written with other whitespace or key order is still the same request,
and anything else is a mismatch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec

from engine.errors import InvalidRequest
from engine.log.events import ExecutionRequested, StepSpec, Target, WorkflowSnapshot
from engine.resources.items import Item
from engine.resources.records import Workflow

MAX_IDEMPOTENCY_KEY = 255


def idempotency(key: str | None, command: str, params: dict[str, Any]) -> tuple[str, str] | None:
    """``(key_digest, fingerprint)`` for the store, or None without a key.

    InvalidRequest for an empty or over-long key.
    """
    if key is None:
        return None
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(f"Idempotency-Key: must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    digest = hashlib.sha256(key.encode()).hexdigest()
    canonical = msgspec.json.encode(params, order="sorted")
    fingerprint = hashlib.sha256(command.encode() + b"\n" + canonical).hexdigest()
    return digest, fingerprint


def item_input(item: Item) -> dict[str, Any]:
    """What every step working on ``item`` gets as its input."""
    return {
        "item_id": item.item_id,
        "item_type": item.type,
        "source": item.source,
        "external_id": item.external_id,
    }


def item_target(item: Item) -> Target:
    """The target of an execution over one item."""
    return Target(
        kind=item.type, item_id=item.item_id, source=item.source, external_id=item.external_id
    )


def snapshot(workflow: Workflow) -> WorkflowSnapshot:
    """The workflow copied into the request, so later edits cannot change what runs."""
    return WorkflowSnapshot(
        workflow_id=workflow.workflow_id,
        name=workflow.name,
        target_kind=workflow.target_kind,
        steps=[
            StepSpec(
                step_id=s.step_id, tool_id=s.tool_id, prompt_text=s.prompt_text, params=s.params
            )
            for s in workflow.steps
        ],
        reporter_id=workflow.reporter_id,
    )


def transcript_request(
    execution_id: str,
    owner: str,
    item: Item,
    *,
    lang: str,
    text: str | None,
    fee: int,
    request_id: str,
    idempotency_key: str | None,
    duration_s: int | None = None,
    embed: bool = False,
) -> ExecutionRequested:
    """The transcript of ``item`` in ``lang``: one ``transcribe`` step (``text`` given: that text
    is the transcript, no provider call), then with ``embed`` an ``embed`` step over it.
    ``duration_s``, the audio's length when known, is what the step's cost is estimated from."""
    steps = [StepSpec(step_id="step_1", tool_id="transcribe", params={"lang": lang})]
    inputs: list[dict[str, Any]] = [
        {
            "item_id": item.item_id,
            "source": item.source,
            "external_id": item.external_id,
            "lang": lang,
            "text": text,
            **({} if duration_s is None else {"duration_s": duration_s}),
        }
    ]
    if embed:
        steps.append(StepSpec(step_id="step_2", tool_id="embed"))
        inputs.append({"item_id": item.item_id, "lang": lang})
    return ExecutionRequested(
        execution_id=execution_id,
        owner=owner,
        kind="transcript",
        target=item_target(item),
        workflow=WorkflowSnapshot(
            workflow_id=None,
            name="transcript",
            target_kind=item.type,
            steps=steps,
        ),
        step_inputs=inputs,
        fee=fee,
        request_id=request_id,
        idempotency_key=idempotency_key,
    )


def process_request(
    execution_id: str,
    owner: str,
    item: Item,
    workflow: WorkflowSnapshot,
    *,
    fee: int,
    request_id: str,
    idempotency_key: str | None,
    reporter_id: str | None,
    schedule_id: str | None = None,
    run_execution_id: str | None = None,
    duration_s: int | None = None,
) -> ExecutionRequested:
    """A reporter's ``workflow`` over one ``item`` (a ``process`` request, or a video a schedule
    run picked: then ``schedule_id`` and the run's ``run_execution_id`` are named).
    ``duration_s``, the video's length when known, is what a transcription is estimated from."""
    step_input = item_input(item)
    if duration_s is not None:
        step_input["duration_s"] = duration_s
    return ExecutionRequested(
        execution_id=execution_id,
        owner=owner,
        kind="process",
        target=item_target(item),
        workflow=workflow,
        step_inputs=[step_input for _ in workflow.steps],
        fee=fee,
        request_id=request_id,
        idempotency_key=idempotency_key,
        reporter_id=reporter_id,
        schedule_id=schedule_id,
        run_execution_id=run_execution_id,
    )


def collection_request(
    execution_id: str,
    owner: str,
    collection_id: str,
    items: Sequence[Item],
    workflow: WorkflowSnapshot,
    *,
    fee: int,
    request_id: str,
    idempotency_key: str | None,
    reporter_id: str,
) -> ExecutionRequested:
    """A reporter's ``workflow`` over every one of ``items`` as ONE per-item execution: the
    workflow's steps once per item, each step input naming its ``item_index``, ``item_id`` and
    ``item_step`` (engine.run.plan treats a failure as that item's only)."""
    steps: list[StepSpec] = []
    inputs: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        for k, spec in enumerate(workflow.steps):
            steps.append(spec)
            inputs.append({**item_input(item), "item_index": index, "item_step": k})
    return ExecutionRequested(
        execution_id=execution_id,
        owner=owner,
        kind="process_collection",
        target=Target(kind="collection", collection_id=collection_id),
        workflow=msgspec.structs.replace(workflow, steps=steps),
        step_inputs=inputs,
        fee=fee,
        request_id=request_id,
        idempotency_key=idempotency_key,
        reporter_id=reporter_id,
    )
