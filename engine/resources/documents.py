"""Documents ``doc_``: the outputs of executions, stored once and listed by item, reporter, kind.

A document's content is a blob under its sha256 (written before the record, so a record never
names a missing blob); its record is listed in the owner's index and, when it has them, its item's
(``itemdocs``) and reporter's (``repdocs``) indexes, so those filters read one zset instead of
scanning. Two ways in:

* :func:`document_record`: the worker (engine.run.drive) publishes the output of a StepCompleted
  whose ``kind`` is in DOCUMENT_KINDS (a summary, claims, an LLM completion) in the append that
  writes that StepCompleted (an engine.log.event_log.Record, written by the same script), so a
  step is never durable without its document and no extra round trip is spent on it. Its id is
  derived from the execution and the step index (:func:`document_id`) and the record is written
  only if absent, so a retry or a takeover never makes two. :func:`publish_document` writes the
  same record on its own: for a StepCompleted an older worker appended without its document.
* :func:`create_document`: a document made outside an execution, under a fresh id.

Transcripts are documents too, but they are not stored here: the projector derives them from the
log (projections.documents), and the API lists both sources merged in id order.
"""

from __future__ import annotations

import hashlib

import msgspec

from engine.clock import now_ms
from engine.errors import InvalidRequest
from engine.log.event_log import Record
from engine.log.events import ExecutionRequested, StepCompleted
from engine.log.ids import derived_id, is_id, new_id
from engine.resources.records import DOCUMENTS, Document
from engine.resources.relations import ITEM_DOCUMENTS, REPORTER_DOCUMENTS
from engine.resources.store import Store, encode
from engine.runtime import Runtime

_SCAN_BATCH = 200
# Step output kinds that are documents (transcripts are derived by the projector instead).
DOCUMENT_KINDS = frozenset({"summary", "claims", "completion"})


def document_kind(event: StepCompleted) -> str | None:
    """The document kind of a step's output, or None when the output is not a document."""
    kind = event.output.get("kind")
    return kind if isinstance(kind, str) and kind in DOCUMENT_KINDS else None


def document_id(request: ExecutionRequested, step_index: int) -> str:
    """The id of the document of step ``step_index``: the same for every attempt and worker.

    Shaped like engine.log.ids (50 bits of ms, 50 more bits): the request's time, so the documents
    of an execution list with it, then 34 bits of the execution id's hash and the step index, so
    they sort by step and never collide with another execution's."""
    digest = int.from_bytes(hashlib.sha256(request.execution_id.encode()).digest()[:8], "big")
    low = ((digest >> 30) << 16) | (step_index & 0xFFFF)
    return derived_id("doc", request.at, low)


def step_document(
    runtime: Runtime, request: ExecutionRequested, event: StepCompleted
) -> tuple[Document, tuple[str, bytes] | None] | None:
    """The document of a StepCompleted and, for a small inline output, the blob ``(sha256,
    content)`` it names, which must be stored first; None when the output is not a document.

    The content is the step's blob (stored under its hash by the append) or the output's JSON."""
    kind = document_kind(event)
    if kind is None:
        return None
    ref = event.output_ref
    blob: tuple[str, bytes] | None = None
    if ref is not None:
        sha256, size = ref.sha256, ref.size
    else:
        content = msgspec.json.encode(event.output)
        sha256, size = hashlib.sha256(content).hexdigest(), len(content)
        blob = (sha256, content)
    index = event.step_index
    step_input = request.step_inputs[index] if index < len(request.step_inputs) else {}
    item_id = step_input.get("item_id") or request.target.item_id
    spec = request.workflow.steps[index] if index < len(request.workflow.steps) else None
    document = Document(
        document_id=document_id(request, index),
        owner=request.owner,
        kind=kind,
        item_id=item_id if isinstance(item_id, str) else None,
        reporter_id=request.reporter_id or request.workflow.reporter_id,
        execution_id=request.execution_id,
        title=f"{request.workflow.name}: step {index} ({spec.tool_id if spec else '?'})",
        sha256=sha256,
        size=size,
        created_at=event.at,
    )
    return document, blob


def document_record(
    runtime: Runtime, request: ExecutionRequested, event: StepCompleted
) -> tuple[Record, tuple[str, bytes] | None] | None:
    """What an append of ``event`` publishes for its document: the record (written only if
    absent, listed in its indexes) and the inline blob to store with it, or None when the output
    is not a document."""
    found = step_document(runtime, request, event)
    if found is None:
        return None
    document, blob = found
    keys, owner, doc_id = runtime.store.keys, document.owner, document.document_id
    indexes = [keys.resource_index(owner, DOCUMENTS.key)]
    if document.item_id is not None:
        indexes.append(keys.resource(owner, ITEM_DOCUMENTS, document.item_id))
    if document.reporter_id is not None:
        indexes.append(keys.resource(owner, REPORTER_DOCUMENTS, document.reporter_id))
    key = keys.resource(owner, DOCUMENTS.key, doc_id)
    return Record(key, encode(document), doc_id, tuple(indexes)), blob


async def publish_document(
    runtime: Runtime, request: ExecutionRequested, event: StepCompleted
) -> Document | None:
    """Create the document of a durable StepCompleted unless it exists; None when it did (or when
    the step's output is not a document). For a StepCompleted appended without its document (by
    a worker older than :func:`document_record`): the blob first, so a record never names a
    missing blob."""
    found = step_document(runtime, request, event)
    if found is None:
        return None
    document, blob = found
    if blob is not None:
        await runtime.store.blobs.put(runtime.store.keys.partition(request.owner), *blob)
    return document if await _insert(runtime, document) else None


async def create_document(
    runtime: Runtime,
    owner: str,
    *,
    kind: str,
    content: bytes,
    item_id: str | None = None,
    reporter_id: str | None = None,
    execution_id: str | None = None,
    title: str | None = None,
) -> Document:
    """Store ``content`` once by its hash and a document record describing it."""
    if not kind.isidentifier():
        raise InvalidRequest("kind: letters, digits and _ only")
    sha256 = hashlib.sha256(content).hexdigest()
    await runtime.store.blobs.put(runtime.store.keys.partition(owner), sha256, content)
    document = Document(
        document_id=new_id("doc"),
        owner=owner,
        kind=kind,
        item_id=item_id,
        reporter_id=reporter_id,
        execution_id=execution_id,
        title=title,
        sha256=sha256,
        size=len(content),
        created_at=now_ms(),
    )
    await _insert(runtime, document)
    return document


async def _insert(runtime: Runtime, document: Document) -> bool:
    """Write ``document``'s record and list it in its indexes, unless a record with its id exists
    (False then: nothing was written)."""
    st = Store(runtime)
    owner, document_id = document.owner, document.document_id
    key = st.record(owner, DOCUMENTS, document_id)
    txn = st.txn().absent(key).put(key, document).add(st.index(owner, DOCUMENTS), document_id)
    if document.item_id is not None:
        txn.add(st.children(owner, ITEM_DOCUMENTS, document.item_id), document_id)
    if document.reporter_id is not None:
        txn.add(st.children(owner, REPORTER_DOCUMENTS, document.reporter_id), document_id)
    return await txn.commit()


async def get_document(runtime: Runtime, owner: str, document_id: str) -> Document | None:
    """The owner's stored document, or None (it may still be a transcript document)."""
    if not is_id(document_id, DOCUMENTS.prefix):
        return None
    found = await Store(runtime).load_many(owner, DOCUMENTS, [document_id])
    return found[0] if found else None


async def content_of(runtime: Runtime, owner: str, document: Document) -> bytes | None:
    """The document's content (None only if its blob was lost)."""
    return await runtime.store.blobs.get(runtime.store.keys.partition(owner), document.sha256)


async def list_documents(
    runtime: Runtime,
    owner: str,
    *,
    limit: int,
    below: str | None,
    item_id: str | None = None,
    reporter_id: str | None = None,
    kind: str | None = None,
) -> list[Document]:
    """Up to ``limit`` of the owner's stored documents with ids below ``below`` (None: from the
    newest), newest first, matching every filter given."""
    st = Store(runtime)
    if item_id is not None:
        key = st.children(owner, ITEM_DOCUMENTS, item_id)
    elif reporter_id is not None:
        key = st.children(owner, REPORTER_DOCUMENTS, reporter_id)
    else:
        key = st.index(owner, DOCUMENTS)
    found: list[Document] = []
    cursor = below
    while len(found) < limit:
        ids, cursor = await st.page(key, DOCUMENTS.prefix, limit=_SCAN_BATCH, cursor=cursor)
        for document in await st.load_many(owner, DOCUMENTS, ids):
            if reporter_id is not None and document.reporter_id != reporter_id:
                continue
            if kind is not None and document.kind != kind:
                continue
            found.append(document)
        if cursor is None:
            break
    return found[:limit]
