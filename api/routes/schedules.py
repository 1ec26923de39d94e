"""Schedules under a reporter (``/v1/reporters/{reporter_id}/schedules``) and their collections."""

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
    AttachCollection,
    CreateSchedule,
    SchedulePageQuery,
    UpdateSchedule,
    changes,
)
from api.schemas.resources import ScheduleList, ScheduleResponse
from engine.errors import NotFound
from engine.log.ids import is_id
from engine.resources import schedules


def _reporter_id(request: Request) -> str:
    return path_id(request, "reporter_id", "rep")


def _ids(request: Request) -> tuple[str, str]:
    return _reporter_id(request), path_id(request, "schedule_id", "sch")


def _collection_ids(ids: list[str]) -> list[str]:
    """Body collection ids: a malformed one is as missing as another owner's (404)."""
    for collection_id in ids:
        if not is_id(collection_id, "col"):
            raise NotFound("no such collection")
    return ids


@doc(
    summary="Create a schedule for a reporter",
    semantic=(
        "a workflow_id that is not a workflow of this reporter; collections that hold no "
        "YouTube channel"
    ),
    request=CreateSchedule,
    response=ScheduleResponse,
    status=201,
    errors=[403],  # quota_exceeded
    tags=["schedules"],
)
@account_route("write")
async def create_schedule(request: Request, caller: Caller) -> Response:
    """``POST /v1/reporters/{reporter_id}/schedules`` → 201 ``{schedule}``."""
    reporter_id = _reporter_id(request)
    body = await decode_body(request, CreateSchedule)
    fields = changes(body)
    fields["collection_ids"] = _collection_ids(body.collection_ids)
    created = await schedules.create_schedule(
        runtime_of(request), caller.account_id, reporter_id, fields
    )
    return respond(ScheduleResponse(schedule=render.schedule(created)), 201)


@doc(
    summary="List a reporter's schedules",
    response=ScheduleList,
    query=SchedulePageQuery,
    tags=["schedules"],
)
@account_route("read")
async def list_schedules(request: Request, caller: Caller) -> Response:
    """``GET /v1/reporters/{reporter_id}/schedules?limit=&cursor=`` → newest first."""
    reporter_id = _reporter_id(request)
    limit, cursor = page_params(request)
    page, next_cursor = await schedules.list_schedules(
        runtime_of(request), caller.account_id, reporter_id, limit=limit, cursor=cursor
    )
    rendered = [render.schedule(s) for s in page]
    return respond(ScheduleList(schedules=rendered, next_cursor=next_cursor))


@doc(summary="A schedule", response=ScheduleResponse, tags=["schedules"])
@account_route("read")
async def get_schedule(request: Request, caller: Caller) -> Response:
    """``GET …/schedules/{schedule_id}``."""
    found = await schedules.get_schedule(runtime_of(request), caller.account_id, *_ids(request))
    return respond(ScheduleResponse(schedule=render.schedule(found)))


@doc(
    summary="Update a schedule",
    semantic=(
        "a workflow_id that is not a workflow of this reporter; collections that hold no "
        "YouTube channel"
    ),
    request=UpdateSchedule,
    response=ScheduleResponse,
    errors=[409],
    tags=["schedules"],
)
@account_route("write")
async def update_schedule(request: Request, caller: Caller) -> Response:
    """``PATCH …/schedules/{schedule_id}`` (``enabled`` included)."""
    ids = _ids(request)
    body = await decode_body(request, UpdateSchedule)
    fields = changes(body)
    if "collection_ids" in fields:
        fields["collection_ids"] = _collection_ids(fields["collection_ids"])
    updated = await schedules.update_schedule(runtime_of(request), caller.account_id, *ids, fields)
    return respond(ScheduleResponse(schedule=render.schedule(updated)))


@doc(summary="Delete a schedule", status=204, errors=[409], tags=["schedules"])
@account_route("write")
async def delete_schedule(request: Request, caller: Caller) -> Response:
    """``DELETE …/schedules/{schedule_id}`` → 204."""
    await schedules.delete_schedule(runtime_of(request), caller.account_id, *_ids(request))
    return Response(status_code=204)


@doc(
    summary="Attach a collection to a schedule",
    semantic="collections that hold no YouTube channel",
    request=AttachCollection,
    response=ScheduleResponse,
    errors=[409],
    tags=["schedules", "collections"],
)
@account_route("write")
async def attach_collection(request: Request, caller: Caller) -> Response:
    """``POST …/schedules/{schedule_id}/collections {collection_id}`` → ``{schedule}``."""
    ids = _ids(request)
    body = await decode_body(request, AttachCollection)
    [collection_id] = _collection_ids([body.collection_id])
    updated = await schedules.attach_collection(
        runtime_of(request), caller.account_id, *ids, collection_id
    )
    return respond(ScheduleResponse(schedule=render.schedule(updated)))


@doc(
    summary="Detach a collection from a schedule",
    status=204,
    errors=[409],
    tags=["schedules", "collections"],
)
@account_route("write")
async def detach_collection(request: Request, caller: Caller) -> Response:
    """``DELETE …/schedules/{schedule_id}/collections/{collection_id}`` → 204."""
    ids = _ids(request)
    collection_id = path_id(request, "collection_id", "col")
    await schedules.detach_collection(runtime_of(request), caller.account_id, *ids, collection_id)
    return Response(status_code=204)


_SCH = "/v1/reporters/{reporter_id}/schedules"

ROUTES: list[BaseRoute] = [
    Route(_SCH, create_schedule, methods=["POST"]),
    Route(_SCH, list_schedules, methods=["GET"]),
    Route(_SCH + "/{schedule_id}", get_schedule, methods=["GET"]),
    Route(_SCH + "/{schedule_id}", update_schedule, methods=["PATCH"]),
    Route(_SCH + "/{schedule_id}", delete_schedule, methods=["DELETE"]),
    Route(_SCH + "/{schedule_id}/collections", attach_collection, methods=["POST"]),
    Route(
        _SCH + "/{schedule_id}/collections/{collection_id}", detach_collection, methods=["DELETE"]
    ),
]
