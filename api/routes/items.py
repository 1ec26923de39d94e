"""Items (``/v1/items``) and the transcript of an item: request one (202) and read it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api import render
from api.auth import Caller, account_route, runtime_of
from api.errors import request_id_of
from api.openapi import doc
from api.parse import IDEMPOTENCY_HEADER, decode_body, page_params, path_id
from api.render import respond
from api.routes.executions import accepted, queries_of
from api.schemas.executions import ExecutionResponse, TranscriptResponse
from api.schemas.requests import CreateItem, ItemPageQuery, TranscriptQuery, TranscriptRequest
from api.schemas.resources import ItemList, ItemResponse
from engine import commands
from engine.errors import InvalidRequest, NotFound
from engine.language import LANG_HINT, canonical_lang, valid_lang
from engine.resources import items


@doc(
    summary="Create an item from a URL or a handle",
    semantic=(
        "a source that is none of the known kinds (a YouTube video or channel, a Twitter/X "
        "account, an RSS feed)"
    ),
    request=CreateItem,
    response=ItemResponse,
    status=201,
    errors=[403],  # quota_exceeded
    tags=["items"],
)
@account_route("write")
async def create_item(request: Request, caller: Caller) -> Response:
    """``POST /v1/items {source}`` → 201 the item with its detected type."""
    body = await decode_body(request, CreateItem)
    item = await items.create_item(runtime_of(request), caller.account_id, body.source)
    return respond(ItemResponse(item=render.item(item)), 201)


@doc(summary="List items", response=ItemList, query=ItemPageQuery, tags=["items"])
@account_route("read")
async def list_items(request: Request, caller: Caller) -> Response:
    """``GET /v1/items?limit=&cursor=`` → newest first, with ``next_cursor``."""
    limit, cursor = page_params(request)
    page, next_cursor = await items.list_items(
        runtime_of(request), caller.account_id, limit=limit, cursor=cursor
    )
    return respond(ItemList(items=[render.item(i) for i in page], next_cursor=next_cursor))


@doc(summary="An item", response=ItemResponse, tags=["items"])
@account_route("read")
async def get_item(request: Request, caller: Caller) -> Response:
    """``GET /v1/items/{item_id}``."""
    item_id = path_id(request, "item_id", "itm")
    item = await items.get_item(runtime_of(request), caller.account_id, item_id)
    return respond(ItemResponse(item=render.item(item)))


@doc(summary="Delete an item", status=204, tags=["items"])
@account_route("write")
async def delete_item(request: Request, caller: Caller) -> Response:
    """``DELETE /v1/items/{item_id}`` → 204."""
    item_id = path_id(request, "item_id", "itm")
    await items.delete_item(runtime_of(request), caller.account_id, item_id)
    return Response(status_code=204)


@doc(
    summary="Request the transcript of an item",
    semantic="`invalid_target` for an item that is not a youtube_video (nothing is charged)",
    request=TranscriptRequest,
    body_required=False,
    response=ExecutionResponse,
    status=202,
    errors=[402, 409],
    tags=["items", "executions"],
)
@account_route("write")
async def request_transcript(request: Request, caller: Caller) -> Response:
    """``POST /v1/items/{item_id}/transcript {lang?, embed?, text?}`` → 202 ``{execution}``.

    With ``Idempotency-Key``, a repeat with the same body returns the same execution and charges
    nothing; the same key with another body is 409.
    """
    item_id = path_id(request, "item_id", "itm")
    body = await decode_body(request, TranscriptRequest, optional=True)
    result = await commands.request_transcript(
        runtime_of(request),
        caller.account_id,
        item_id,
        lang=body.lang,
        embed=body.embed,
        text=body.text,
        request_id=request_id_of(request),
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
    )
    return await accepted(request, caller, result.execution_id, result.event)


@doc(
    summary="The transcript of an item",
    response=TranscriptResponse,
    query=TranscriptQuery,
    tags=["items"],
)
@account_route("read")
async def get_transcript(request: Request, caller: Caller) -> Response:
    """``GET /v1/items/{item_id}/transcript?lang=`` → ``{transcript}``, 404 until there is one;
    ``embedding`` is the status of the embedding its request asked for (null: none asked)."""
    runtime = runtime_of(request)
    item_id = path_id(request, "item_id", "itm")
    lang = request.query_params.get("lang") or None  # None: the newest, in any language
    if lang is not None:
        if not valid_lang(lang):
            raise InvalidRequest(f"lang: {LANG_HINT}")
        lang = canonical_lang(lang)
    await items.get_item(runtime, caller.account_id, item_id)
    queries = queries_of(request)
    transcript = await queries.get_transcript(caller.account_id, item_id, lang)
    if transcript is None:
        raise NotFound("no transcript for this item yet")
    made_by = await queries.get_view(caller.account_id, transcript.execution_id)
    return respond(TranscriptResponse(transcript=render.transcript(transcript, made_by)))


ROUTES: list[BaseRoute] = [
    Route("/v1/items", create_item, methods=["POST"]),
    Route("/v1/items", list_items, methods=["GET"]),
    Route("/v1/items/{item_id}", get_item, methods=["GET"]),
    Route("/v1/items/{item_id}", delete_item, methods=["DELETE"]),
    Route("/v1/items/{item_id}/transcript", request_transcript, methods=["POST"]),
    Route("/v1/items/{item_id}/transcript", get_transcript, methods=["GET"]),
]
