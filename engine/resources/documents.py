"""Documents ``doc_``: the outputs of executions, stored once and listed by item, reporter, kind.

:func:`create_document` is what workflows call when a step produces a document: the content goes
to a blob under its sha256 (written before the record, so a record never names a missing blob) and
the record is listed in the owner's index and, when it has them, its item's (``itemdocs``) and
reporter's (``repdocs``) indexes, so those filters read one zset instead of scanning.

Transcripts are documents too, but they are not stored here: the projector derives them from the
log (projections.documents), and the API lists both sources merged in id order.
"""

from __future__ import annotations

import hashlib

from engine.clock import now_ms
from engine.errors import InvalidRequest
from engine.log.ids import is_id, new_id
from engine.resources.records import DOCUMENTS, Document
from engine.resources.relations import ITEM_DOCUMENTS, REPORTER_DOCUMENTS
from engine.resources.store import Store
from engine.runtime import Runtime

_SCAN_BATCH = 200


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
    st = Store(runtime)
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
    key = st.record(owner, DOCUMENTS, document.document_id)
    txn = (
        st.txn()
        .absent(key)
        .put(key, document)
        .add(st.index(owner, DOCUMENTS), document.document_id)
    )
    if item_id is not None:
        txn.add(st.children(owner, ITEM_DOCUMENTS, item_id), document.document_id)
    if reporter_id is not None:
        txn.add(st.children(owner, REPORTER_DOCUMENTS, reporter_id), document.document_id)
    await txn.commit()
    return document


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
