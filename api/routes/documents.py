"""Documents (``/v1/documents``): outputs of executions, filtered by item, reporter and kind."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api import render
from api.auth import Caller, account_route, runtime_of
from api.openapi import doc
from api.parse import page_params, path_id
from api.render import respond
from api.schemas.requests import DocumentListQuery
from api.schemas.resources import DocumentList, DocumentResponse
from engine.errors import InvalidRequest, NotFound
from engine.log.ids import is_id
from engine.resources import documents

_KIND = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def _filter(request: Request, name: str, kind: str) -> str | None:
    value = request.query_params.get(name) or None
    if value is not None and not is_id(value, kind):
        raise InvalidRequest(f"{name}: not {'an' if kind[0] in 'aeiou' else 'a'} {kind}_ id")
    return value


@doc(
    summary="List documents",
    response=DocumentList,
    query=DocumentListQuery,
    tags=["documents"],
)
@account_route("read")
async def list_documents(request: Request, caller: Caller) -> Response:
    """``GET /v1/documents?item_id=&reporter_id=&kind=&limit=&cursor=`` → newest first."""
    limit, cursor = page_params(request)
    if cursor is not None and not is_id(cursor, "doc"):
        raise InvalidRequest("cursor: not a cursor this list returned")
    kind = request.query_params.get("kind") or None
    if kind is not None and not _KIND.match(kind):
        raise InvalidRequest("kind: lower-case letters, digits and _")
    found = await documents.list_documents(
        runtime_of(request),
        caller.account_id,
        limit=limit + 1,
        below=cursor,
        item_id=_filter(request, "item_id", "itm"),
        reporter_id=_filter(request, "reporter_id", "rep"),
        kind=kind,
    )
    page = found[:limit]
    next_cursor = page[-1].document_id if len(found) > limit else None
    rendered = [render.document(d) for d in page]
    return respond(DocumentList(documents=rendered, next_cursor=next_cursor))


@doc(summary="A document with its content", response=DocumentResponse, tags=["documents"])
@account_route("read")
async def get_document(request: Request, caller: Caller) -> Response:
    """``GET /v1/documents/{document_id}`` → ``{document}`` with its ``content``."""
    runtime = runtime_of(request)
    document_id = path_id(request, "document_id", "doc")
    found = await documents.get_document(runtime, caller.account_id, document_id)
    if found is None:
        raise NotFound("no such document")
    raw = await documents.content_of(runtime, caller.account_id, found)
    return respond(DocumentResponse(document=render.document(found, _content(raw))))


def _content(raw: bytes | None) -> Any:
    """JSON content decoded; anything else as text (None if the blob was lost)."""
    if raw is None:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")


ROUTES: list[BaseRoute] = [
    Route("/v1/documents", list_documents, methods=["GET"]),
    Route("/v1/documents/{document_id}", get_document, methods=["GET"]),
]
