"""What the API calls to start and stop executions. No HTTP here.

Each command builds its event and hands it to the store, which charges, checks idempotency and
appends atomically (``EventStore.request``) or appends with the expected seq (``append``).

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
from engine.events import (
    ExecutionCancelRequested,
    ExecutionRequested,
    StepSpec,
    Target,
    WorkflowSnapshot,
    is_terminal,
)
from engine.ids import is_id, new_execution_id
from engine.items import get_item
from engine.runtime import Runtime
from engine.store import Accepted

DEFAULT_LANG = "en"
MAX_IDEMPOTENCY_KEY = 255
_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$")
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
