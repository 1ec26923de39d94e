"""What the API calls to start and stop executions. No HTTP here.

Each command builds its event and hands it to the store, which charges, checks idempotency and
appends atomically (``EventStore.request``) or appends with the expected seq (``append``).

Reporter executions (DESIGN §7): ``request_process`` runs a reporter's workflow over one source
(resolved like an item: an item of the owner with the same detected type and id is reused, else
one is created); ``request_process_collection`` runs it over every item of a collection in ONE
execution whose snapshot repeats the workflow's steps once per item, each step input naming its
``item_index`` and ``item_id`` (engine.run.plan treats a failure as that item's only). Both check
everything (reporter, workflow, target kind, items) before the one atomic charge-and-append.

Idempotency: the caller passes the client's key as given. The store keeps
``sha256(key)`` -> ``fingerprint`` where the fingerprint is ``sha256`` of the command, its target
and its canonical parameters (sorted-key JSON of the decoded body), so the same request written
with other whitespace or key order is still the same request, and anything else is a mismatch.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from engine.errors import ConcurrencyConflict, EngineError, InvalidRequest, NotFound
from engine.log.events import (
    ExecutionCancelRequested,
    ExecutionRequested,
    StepSpec,
    Target,
    WorkflowSnapshot,
    is_terminal,
)
from engine.log.ids import is_id, new_execution_id
from engine.log.store import Accepted
from engine.resources import collections, reporters
from engine.resources.items import Item, create_item, detect, get_item
from engine.resources.records import Workflow
from engine.runtime import Runtime

DEFAULT_LANG = "en"
MAX_IDEMPOTENCY_KEY = 255
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
MAX_COLLECTION_ITEMS = 100  # items one process-collection execution runs over, at most
_ITEM_PAGE = 100
ITEM_KINDS = ("youtube_video", "youtube_channel", "twitter", "rss")
# Appends race only with the worker driving the execution; a few rereads always settle it.
_CANCEL_ATTEMPTS = 5


class ExecutionFinished(EngineError):
    """The execution already ended, so it cannot be cancelled."""

    code = "conflict"


def valid_lang(lang: str) -> bool:
    """True for a language code such as ``en`` or ``pt-BR``."""
    return _LANG.match(lang) is not None


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


async def request_transcript(
    runtime: Runtime,
    owner: str,
    item_id: str,
    *,
    lang: str | None,
    embed: bool,
    text: str | None,
    request_id: str,
    idempotency_key: str | None = None,
) -> Accepted:
    """Ask for the transcript of the owner's item: charge the flat fee and append
    ``ExecutionRequested`` (one transcribe step).

    ``text`` given: the transcript is that text (no transcriber call, no provider cost).
    NotFound for another owner's or a missing item; InsufficientBalance when the fee cannot be
    covered (nothing appended); IdempotencyMismatch for a reused key with other parameters.
    """
    lang = DEFAULT_LANG if lang is None else lang
    if not valid_lang(lang):
        raise InvalidRequest("lang: a language code such as en or pt-BR")
    item = await get_item(runtime, owner, item_id)
    idem = idempotency(
        idempotency_key,
        f"transcript {item.item_id}",
        {"lang": lang, "embed": embed, "text": text},
    )
    store = runtime.store
    event = ExecutionRequested(
        execution_id=new_execution_id(store.keys.partition(owner)),
        owner=owner,
        kind="transcript",
        target=Target(
            kind=item.type,
            item_id=item.item_id,
            source=item.source,
            external_id=item.external_id,
        ),
        workflow=WorkflowSnapshot(
            workflow_id=None,
            name="transcript",
            target_kind=item.type,
            steps=[StepSpec(step_id="step_1", tool_id="transcribe", params={"lang": lang})],
        ),
        step_inputs=[
            {
                "item_id": item.item_id,
                "source": item.source,
                "external_id": item.external_id,
                "lang": lang,
                "text": text,
            }
        ],
        fee=runtime.settings.fees.transcript,
        request_id=request_id,
        idempotency_key=idempotency_key,
    )
    return await store.request(event, idempotency=idem)


def item_input(item: Item) -> dict[str, Any]:
    """What every step working on ``item`` gets as its input."""
    return {
        "item_id": item.item_id,
        "item_type": item.type,
        "source": item.source,
        "external_id": item.external_id,
    }


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


async def reporter_workflow(
    runtime: Runtime, owner: str, reporter_id: str, workflow_id: str | None
) -> Workflow:
    """The workflow a reporter runs: ``workflow_id``, else the reporter's default.

    NotFound for a missing reporter or workflow (or another owner's); InvalidRequest when there is
    no default, or the workflow has no steps."""
    reporter = await reporters.get_reporter(runtime, owner, reporter_id)
    chosen = workflow_id or reporter.default_workflow_id
    if chosen is None:
        raise InvalidRequest("workflow_id: the reporter has no default workflow; name one")
    workflow = await reporters.get_workflow(runtime, owner, reporter_id, chosen)
    if not workflow.steps:
        raise InvalidRequest(f"workflow_id: workflow {workflow.workflow_id} has no steps")
    return workflow


async def resolve_source(runtime: Runtime, owner: str, source: str) -> Item:
    """The owner's item for ``source``: the one holding the same detected type and id, else a new
    one (concurrent calls for one new source make one item). InvalidRequest for a source that
    cannot be classified."""
    return await create_item(runtime, owner, source, reuse=True)


async def request_process(
    runtime: Runtime,
    owner: str,
    reporter_id: str,
    *,
    source: str,
    workflow_id: str | None,
    request_id: str,
    idempotency_key: str | None = None,
) -> Accepted:
    """Run the reporter's workflow (``workflow_id`` or its default) over ``source``: charge the
    ``process`` fee and append ``ExecutionRequested`` with the workflow snapshot.

    The workflow's ``target_kind`` must be the source's type: otherwise InvalidRequest, before
    anything is charged or appended (the item may have been created already: it is the owner's
    source either way). NotFound / InsufficientBalance / IdempotencyMismatch as for transcripts.
    """
    workflow = await reporter_workflow(runtime, owner, reporter_id, workflow_id)
    detected = detect(source)
    if workflow.target_kind != detected.type:
        raise InvalidRequest(
            f"workflow_id: workflow {workflow.workflow_id} runs on {workflow.target_kind}, "
            f"not on a {detected.type} source"
        )
    item = await resolve_source(runtime, owner, source)
    idem = idempotency(
        idempotency_key,
        f"process {reporter_id}",
        {"source": source, "workflow_id": workflow_id},
    )
    snap = snapshot(workflow)
    store = runtime.store
    event = ExecutionRequested(
        execution_id=new_execution_id(store.keys.partition(owner)),
        owner=owner,
        kind="process",
        target=Target(
            kind=item.type, item_id=item.item_id, source=item.source, external_id=item.external_id
        ),
        workflow=snap,
        step_inputs=[item_input(item) for _ in snap.steps],
        fee=runtime.settings.fees.process,
        request_id=request_id,
        idempotency_key=idempotency_key,
        reporter_id=reporter_id,
    )
    return await store.request(event, idempotency=idem)


async def collection_items(
    runtime: Runtime, owner: str, collection_id: str, target_kind: str, max_items: int
) -> list[Item]:
    """Up to ``max_items`` items of the collection that a ``target_kind`` workflow runs on
    (``collection``: every item; an item type: the items of that type), oldest first."""
    found: list[Item] = []
    cursor: str | None = None
    while True:
        page, cursor = await collections.list_items(
            runtime, owner, collection_id, limit=_ITEM_PAGE, cursor=cursor
        )
        found.extend(i for i in page if target_kind in ("collection", i.type))
        if cursor is None:
            break
    found.reverse()  # pages are newest first; items run in the order they were added
    return found[:max_items]


async def request_process_collection(
    runtime: Runtime,
    owner: str,
    reporter_id: str,
    *,
    collection_id: str,
    workflow_id: str | None,
    max_items: int | None,
    request_id: str,
    idempotency_key: str | None = None,
) -> Accepted:
    """Run the reporter's workflow over every item of the collection (up to ``max_items``) as ONE
    execution: the ``process_collection`` fee, and a snapshot whose steps are the workflow's steps
    once per item (``step_inputs[i]`` carries ``item_index``, ``item_id`` and ``item_step``).

    The workflow must target ``collection`` (every item) or an item type (the items of that type).
    InvalidRequest when no item fits, or the snapshot would exceed MAX_COLLECTION_ITEMS items.
    """
    limit = MAX_COLLECTION_ITEMS if max_items is None else max_items
    if not 0 < limit <= MAX_COLLECTION_ITEMS:
        raise InvalidRequest(f"max_items: 1 to {MAX_COLLECTION_ITEMS}")
    workflow = await reporter_workflow(runtime, owner, reporter_id, workflow_id)
    if workflow.target_kind not in ("collection", *ITEM_KINDS):
        raise InvalidRequest(f"workflow_id: cannot run on a collection ({workflow.target_kind})")
    await collections.get_collection(runtime, owner, collection_id)
    found = await collection_items(runtime, owner, collection_id, workflow.target_kind, limit)
    if not found:
        raise InvalidRequest(
            f"collection_id: no item of the collection fits a {workflow.target_kind} workflow"
        )
    base = snapshot(workflow)
    steps: list[StepSpec] = []
    inputs: list[dict[str, Any]] = []
    for index, item in enumerate(found):
        for k, spec in enumerate(base.steps):
            steps.append(spec)
            inputs.append({**item_input(item), "item_index": index, "item_step": k})
    idem = idempotency(
        idempotency_key,
        f"process-collection {reporter_id}",
        {"collection_id": collection_id, "workflow_id": workflow_id, "max_items": max_items},
    )
    store = runtime.store
    event = ExecutionRequested(
        execution_id=new_execution_id(store.keys.partition(owner)),
        owner=owner,
        kind="process_collection",
        target=Target(kind="collection", collection_id=collection_id),
        workflow=msgspec.structs.replace(base, steps=steps),
        step_inputs=inputs,
        fee=runtime.settings.fees.process_collection,
        request_id=request_id,
        idempotency_key=idempotency_key,
        reporter_id=reporter_id,
    )
    return await store.request(event, idempotency=idem)


async def cancel(runtime: Runtime, owner: str, execution_id: str, *, reason: str = "") -> None:
    """Record a cancel request for the owner's execution (the worker stops it).

    Asking again while the first request is pending changes nothing. NotFound for a missing or
    another owner's execution; ExecutionFinished when it has already ended.
    """
    if not is_id(execution_id, "exc"):
        raise NotFound("no such execution")
    store = runtime.store
    for _ in range(_CANCEL_ATTEMPTS):
        history = await store.history(execution_id)
        first = history[0] if history else None
        if not isinstance(first, ExecutionRequested) or first.owner != owner:
            raise NotFound("no such execution")
        if any(is_terminal(e) for e in history):
            raise ExecutionFinished("the execution has already finished")
        if any(isinstance(e, ExecutionCancelRequested) for e in history):
            return
        request = ExecutionCancelRequested(
            execution_id=execution_id, requested_by=owner, reason=reason
        )
        try:
            await store.append(execution_id, history[-1].seq, [request])
            return
        except ConcurrencyConflict:
            continue  # the worker appended meanwhile: look again
    raise ConcurrencyConflict(execution_id, history[-1].seq, history[-1].seq + 1)
