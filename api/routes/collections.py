"""Collections (``/v1/collections``) and the items in a collection."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api import render
from api.auth import Caller, account_route, runtime_of
from api.openapi import doc
from api.parse import decode_body, page_params, path_id
from api.render import respond
from api.schemas.requests import (
    AddCollectionItem,
    CollectionPageQuery,
    CreateCollection,
    ItemPageQuery,
    UpdateCollection,
    changes,
)
from api.schemas.resources import CollectionList, CollectionResponse, ItemList, ItemResponse
from engine.errors import NotFound
from engine.log.ids import is_id
from engine.resources import collections


def _collection_id(request: Request) -> str:
    return path_id(request, "collection_id", "col")


@doc(
    summary="Create a collection",
    request=CreateCollection,
    response=CollectionResponse,
    status=201,
    errors=[403],  # quota_exceeded
    tags=["collections"],
)
@account_route("write")
async def create_collection(request: Request, caller: Caller) -> Response:
    """``POST /v1/collections`` → 201 ``{collection}``."""
    body = await decode_body(request, CreateCollection)
    created = await collections.create_collection(
        runtime_of(request), caller.account_id, changes(body)
    )
    return respond(CollectionResponse(collection=render.collection(created)), 201)


@doc(
    summary="List collections",
    response=CollectionList,
    query=CollectionPageQuery,
    tags=["collections"],
)
@account_route("read")
async def list_collections(request: Request, caller: Caller) -> Response:
    """``GET /v1/collections?limit=&cursor=`` → newest first."""
    limit, cursor = page_params(request)
    page, next_cursor = await collections.list_collections(
        runtime_of(request), caller.account_id, limit=limit, cursor=cursor
    )
    rendered = [render.collection(c) for c in page]
    return respond(CollectionList(collections=rendered, next_cursor=next_cursor))


@doc(summary="A collection", response=CollectionResponse, tags=["collections"])
@account_route("read")
async def get_collection(request: Request, caller: Caller) -> Response:
    """``GET /v1/collections/{collection_id}``."""
    found = await collections.get_collection(
        runtime_of(request), caller.account_id, _collection_id(request)
    )
    return respond(CollectionResponse(collection=render.collection(found)))


@doc(
    summary="Update a collection",
    request=UpdateCollection,
    response=CollectionResponse,
    errors=[409],
    tags=["collections"],
)
@account_route("write")
async def update_collection(request: Request, caller: Caller) -> Response:
    """``PATCH /v1/collections/{collection_id}``: only the fields given change."""
    collection_id = _collection_id(request)
    body = await decode_body(request, UpdateCollection)
    updated = await collections.update_collection(
        runtime_of(request), caller.account_id, collection_id, changes(body)
    )
    return respond(CollectionResponse(collection=render.collection(updated)))


@doc(summary="Delete a collection", status=204, errors=[409], tags=["collections"])
@account_route("write")
async def delete_collection(request: Request, caller: Caller) -> Response:
    """``DELETE /v1/collections/{collection_id}`` → 204 (detached from its schedules)."""
    await collections.delete_collection(
        runtime_of(request), caller.account_id, _collection_id(request)
    )
    return Response(status_code=204)


@doc(
    summary="Add an item to a collection",
    request=AddCollectionItem,
    response=ItemResponse,
    status=201,
    errors=[409],
    tags=["collections", "items"],
)
@account_route("write")
async def add_item(request: Request, caller: Caller) -> Response:
    """``POST /v1/collections/{collection_id}/items {item_id}`` → 201 ``{item}``."""
    collection_id = _collection_id(request)
    body = await decode_body(request, AddCollectionItem)
    if not is_id(body.item_id, "itm"):
        raise NotFound("no such item")
    item = await collections.add_item(
        runtime_of(request), caller.account_id, collection_id, body.item_id
    )
    return respond(ItemResponse(item=render.item(item)), 201)


@doc(summary="Remove an item from a collection", status=204, tags=["collections", "items"])
@account_route("write")
async def remove_item(request: Request, caller: Caller) -> Response:
    """``DELETE /v1/collections/{collection_id}/items/{item_id}`` → 204."""
    collection_id = _collection_id(request)
    item_id = path_id(request, "item_id", "itm")
    await collections.remove_item(runtime_of(request), caller.account_id, collection_id, item_id)
    return Response(status_code=204)


@doc(
    summary="List the items in a collection",
    response=ItemList,
    query=ItemPageQuery,
    tags=["collections", "items"],
)
@account_route("read")
async def list_items(request: Request, caller: Caller) -> Response:
    """``GET /v1/collections/{collection_id}/items?limit=&cursor=`` → newest first."""
    collection_id = _collection_id(request)
    limit, cursor = page_params(request)
    page, next_cursor = await collections.list_items(
        runtime_of(request), caller.account_id, collection_id, limit=limit, cursor=cursor
    )
    return respond(ItemList(items=[render.item(i) for i in page], next_cursor=next_cursor))


ROUTES: list[BaseRoute] = [
    Route("/v1/collections", create_collection, methods=["POST"]),
    Route("/v1/collections", list_collections, methods=["GET"]),
    Route("/v1/collections/{collection_id}", get_collection, methods=["GET"]),
    Route("/v1/collections/{collection_id}", update_collection, methods=["PATCH"]),
    Route("/v1/collections/{collection_id}", delete_collection, methods=["DELETE"]),
    Route("/v1/collections/{collection_id}/items", add_item, methods=["POST"]),
    Route("/v1/collections/{collection_id}/items", list_items, methods=["GET"]),
    Route("/v1/collections/{collection_id}/items/{item_id}", remove_item, methods=["DELETE"]),
]
