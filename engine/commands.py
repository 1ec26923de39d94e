"""What the API calls to start and stop executions. No HTTP here.

Each command builds its event and hands it to the store, which charges, checks idempotency and
appends atomically (``store.admission.request``) or appends with the expected seq
(``store.log.append``).

Reporter executions (DESIGN §7): ``request_process`` runs a reporter's workflow over one source
(resolved like an item: an item of the owner with the same detected type and id is reused, else
one is created); ``request_process_collection`` runs it over every item of a collection in ONE
execution whose snapshot repeats the workflow's steps once per item, each step input naming its
``item_index`` and ``item_id`` (engine.run.plan treats a failure as that item's only). Both check
everything (reporter, workflow, target kind, items) before the one atomic charge-and-append.

Idempotency: the caller passes the client's key as given; engine.requests.idempotency turns it
into what the store keeps. The requests themselves are built by engine.requests (pure), which
schedule runs share.
"""

from __future__ import annotations

from typing import get_args

from engine.archive import reader
from engine.errors import (
    ConcurrencyConflict,
    EngineError,
    InvalidRequest,
    InvalidTarget,
    NotFound,
)
from engine.language import DEFAULT_LANG, LANG_HINT, canonical_lang, valid_lang
from engine.log.admission import Accepted
from engine.log.events import (
    ExecutionCancelRequested,
    ExecutionRequested,
    WorkflowSnapshot,
    has_ended,
)
from engine.log.ids import is_id, new_execution_id
from engine.providers import registry
from engine.requests import (
    collection_request,
    idempotency,
    process_request,
    snapshot,
    transcript_request,
)
from engine.resources import collections, items, reporters
from engine.resources.items import ItemType
from engine.runtime import Runtime

MAX_COLLECTION_ITEMS = 100  # items one process-collection execution runs over, at most
ITEM_KINDS: tuple[str, ...] = get_args(ItemType)
TRANSCRIBABLE = frozenset({"youtube_video"})  # the item types a transcript can be made of
# Appends race only with the worker driving the execution; a few rereads always settle it.
_CANCEL_ATTEMPTS = 5


class ExecutionFinished(EngineError):
    """The execution already ended, so it cannot be cancelled."""

    code = "conflict"


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
    ``embed``: an ``embed`` step follows, its embedder cost passed through.
    Only a video has a transcript: another kind of item is InvalidTarget, before anything is
    charged or appended. NotFound for another owner's or a missing item; InsufficientBalance when
    the fee cannot be covered (nothing appended); IdempotencyMismatch for a reused key with other
    parameters.
    """
    lang = DEFAULT_LANG if lang is None else lang
    if not valid_lang(lang):
        raise InvalidRequest(f"lang: {LANG_HINT}")
    lang = canonical_lang(lang)
    item = await items.get_item(runtime, owner, item_id)
    if item.type not in TRANSCRIBABLE:
        raise InvalidTarget(
            f"item_id: item {item.item_id} is a {item.type}; only a youtube_video has a transcript"
        )
    idem = idempotency(
        idempotency_key,
        f"transcript {item.item_id}",
        {"lang": lang, "embed": embed, "text": text},
    )
    store = runtime.store
    event = transcript_request(
        new_execution_id(store.keys.partition(owner)),
        owner,
        item,
        lang=lang,
        text=text,
        duration_s=None if text else known_duration(runtime, item, lang),
        embed=embed,
        fee=runtime.settings.fees.transcript,
        request_id=request_id,
        idempotency_key=idempotency_key,
    )
    return await store.admission.request(event, idempotency=idem)


def known_duration(runtime: Runtime, item: items.Item, lang: str) -> int | None:
    """The audio length of a video item in seconds, when the transcriber knows it without a call
    (the simulation does): what its transcription's cost estimate is made from."""
    transcriber = registry.current().transcriber(runtime.settings)
    return transcriber.known_duration_s(item.external_id or item.source, lang)


_TRANSCRIBING_TOOLS = frozenset({"transcribe", "summary_review", "extract_claims", "embed"})


def workflow_duration(runtime: Runtime, item: items.Item, workflow: WorkflowSnapshot) -> int | None:
    """:func:`known_duration` of a video item in the language the workflow's first step that may
    transcribe asks for (``transcribe``, or a document or ``embed`` step, which transcribes when
    no transcript came before it); None for other items and workflows that transcribe nothing."""
    if item.type not in TRANSCRIBABLE:
        return None
    for step in workflow.steps:
        if step.tool_id in _TRANSCRIBING_TOOLS:
            lang = step.params.get("lang")
            return known_duration(runtime, item, lang if isinstance(lang, str) else DEFAULT_LANG)
    return None


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
    workflow = await reporters.reporter_workflow(runtime, owner, reporter_id, workflow_id)
    detected = items.detect(source)
    if workflow.target_kind != detected.type:
        raise InvalidRequest(
            f"workflow_id: workflow {workflow.workflow_id} runs on {workflow.target_kind}, "
            f"not on a {detected.type} source"
        )
    item = await items.resolve_source(runtime, owner, source)
    idem = idempotency(
        idempotency_key,
        f"process {reporter_id}",
        {"source": source, "workflow_id": workflow_id},
    )
    store = runtime.store
    snap = snapshot(workflow)
    event = process_request(
        new_execution_id(store.keys.partition(owner)),
        owner,
        item,
        snap,
        fee=runtime.settings.fees.process,
        request_id=request_id,
        idempotency_key=idempotency_key,
        reporter_id=reporter_id,
        duration_s=workflow_duration(runtime, item, snap),
    )
    return await store.admission.request(event, idempotency=idem)


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
    workflow = await reporters.reporter_workflow(runtime, owner, reporter_id, workflow_id)
    if workflow.target_kind not in ("collection", *ITEM_KINDS):
        raise InvalidRequest(f"workflow_id: cannot run on a collection ({workflow.target_kind})")
    await collections.get_collection(runtime, owner, collection_id)
    found = await collections.collection_items(
        runtime, owner, collection_id, workflow.target_kind, limit
    )
    if not found:
        raise InvalidRequest(
            f"collection_id: no item of the collection fits a {workflow.target_kind} workflow"
        )
    idem = idempotency(
        idempotency_key,
        f"process-collection {reporter_id}",
        {"collection_id": collection_id, "workflow_id": workflow_id, "max_items": max_items},
    )
    store = runtime.store
    event = collection_request(
        new_execution_id(store.keys.partition(owner)),
        owner,
        collection_id,
        found,
        snapshot(workflow),
        fee=runtime.settings.fees.process_collection,
        request_id=request_id,
        idempotency_key=idempotency_key,
        reporter_id=reporter_id,
    )
    return await store.admission.request(event, idempotency=idem)


async def cancel(runtime: Runtime, owner: str, execution_id: str, *, reason: str = "") -> None:
    """Record a cancel request for the owner's execution (the worker stops it).

    Asking again while the first request is pending changes nothing. NotFound for a missing or
    another owner's execution; ExecutionFinished when it has already ended.
    """
    if not is_id(execution_id, "exc"):
        raise NotFound("no such execution")
    store = runtime.store
    for _ in range(_CANCEL_ATTEMPTS):
        # Once a finished execution's stream has expired, its history is in the archive.
        history = await reader.execution_history(store, runtime.archive, execution_id)
        first = history[0] if history else None
        if not isinstance(first, ExecutionRequested) or first.owner != owner:
            raise NotFound("no such execution")
        if has_ended(history):  # a retried dead letter runs again
            raise ExecutionFinished("the execution has already finished")
        if any(isinstance(e, ExecutionCancelRequested) for e in history):
            return
        request = ExecutionCancelRequested(
            execution_id=execution_id, requested_by=owner, reason=reason
        )
        try:
            await store.log.append(execution_id, history[-1].seq, [request])
            return
        except ConcurrencyConflict:
            continue  # the worker appended meanwhile: look again
    raise ConcurrencyConflict(execution_id, history[-1].seq, history[-1].seq + 1)
