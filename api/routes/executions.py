"""Executions (``/v1/executions``): detail, the caller's list, raw events, cancel.

Reads go through ``projections.queries.Queries``, which folds the execution stream on the fly when
the projector has not caught up yet: a client that just got 202 never sees 404.
"""

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
from api.parse import flag, page_params, path_id
from api.render import respond
from api.schemas.executions import (
    EventList,
    ExecutionDetail,
    ExecutionList,
    ExecutionResponse,
    StepResponse,
)
from api.schemas.requests import SEQ_CURSOR, EventPageQuery, ExecutionListQuery
from engine import commands
from engine.errors import InvalidRequest, NotFound, StoreError
from engine.log.events import ExecutionRequested, StepFailed
from projections.fold import fold
from projections.queries import Queries


def queries_of(request: Request) -> Queries:
    """The app's read side."""
    queries: Queries = request.app.state.queries
    return queries


async def accepted(
    request: Request, caller: Caller, execution_id: str, appended: ExecutionRequested | None = None
) -> Response:
    """The 202 body of an accepted execution: ``{"execution": {…, "status": "pending"}}``.

    A new execution's summary is folded from the event just appended (``appended``: no read
    back); otherwise (a repeated Idempotency-Key, a cancel) the execution as it is now.
    """
    if appended is not None:
        view = fold([appended])
    else:
        found = await queries_of(request).get_view(caller.account_id, execution_id)
        if found is None:  # the append was acknowledged, so read-your-writes must find it
            raise StoreError(f"accepted execution {execution_id} is not readable")
        view = found
    return respond(ExecutionResponse(execution=render.execution(view)), 202)


@doc(
    summary="An execution: status, workflow, steps, step inputs",
    response=ExecutionDetail,
    tags=["executions"],
)
@account_route("own")
async def get_execution(request: Request, caller: Caller) -> Response:
    """``GET /v1/executions/{execution_id}`` → ``{execution, workflow, steps, step_inputs}``."""
    execution_id = path_id(request, "execution_id", "exc")
    view = await queries_of(request).get_view(caller.account_id, execution_id)
    if view is None:
        raise NotFound("no such execution")
    return respond(render.execution_detail(view))


@doc(
    summary="The caller's executions",
    response=ExecutionList,
    query=ExecutionListQuery,
    tags=["executions"],
)
@account_route("read")
async def my_executions(request: Request, caller: Caller) -> Response:
    """``GET /v1/executions/me?active=1&limit=&cursor=`` → newest first, with ``next_cursor``."""
    limit, cursor = page_params(request)
    page = await queries_of(request).list_executions(
        caller.account_id, active=flag(request, "active"), limit=limit, cursor=cursor
    )
    return respond(render.execution_list(page))


@doc(
    summary="The raw event history, a page at a time",
    response=EventList,
    query=EventPageQuery,
    tags=["executions"],
)
@account_route("own")
async def execution_events(request: Request, caller: Caller) -> Response:
    """``GET /v1/executions/{execution_id}/events?limit=&cursor=`` → ``{"events": [...],
    "next_cursor"}``: the raw history oldest first; the cursor is the seq of the last event of
    the previous page, so events appended meanwhile come on later pages, never shifted."""
    execution_id = path_id(request, "execution_id", "exc")
    limit, cursor = page_params(request)
    after = 0
    if cursor is not None:
        if not re.fullmatch(SEQ_CURSOR, cursor):
            raise InvalidRequest("cursor: not a cursor this list returned")
        after = int(cursor)
    history = await queries_of(request).history(caller.account_id, execution_id)
    if history is None:
        raise NotFound("no such execution")
    rest = [e for e in history if e.seq > after]
    page = rest[:limit]
    next_cursor = str(page[-1].seq) if len(rest) > limit else None
    return respond(render.events(page, next_cursor))


@doc(
    summary="One step of an execution, whole",
    response=StepResponse,
    tags=["executions"],
)
@account_route("read")
async def execution_step(request: Request, caller: Caller) -> Response:
    """``GET /v1/executions/{execution_id}/steps/{step_index}`` → ``{"step": {...}}``: what the
    step was given (an LLM step: the whole prompt it sent and the model), what it returned (a
    large output read from its blob), usage, cost, attempts and every failed attempt's error.
    404 for an index the execution's workflow does not have."""
    execution_id = path_id(request, "execution_id", "exc")
    index = request.path_params["step_index"]
    queries = queries_of(request)
    view = await queries.get_view(caller.account_id, execution_id)
    if view is None:
        raise NotFound("no such execution")
    if not 0 <= index < len(view.steps):
        raise NotFound(f"no step {index}: the execution has {len(view.steps)} steps")
    step = view.steps[index]
    blob: Any = None
    if step.output_ref is not None:
        data = await queries.blob(caller.account_id, step.output_ref.sha256)
        if data is not None:
            try:
                blob = orjson.loads(data)
            except orjson.JSONDecodeError:
                blob = data.decode(errors="replace")
    history = await queries.history(caller.account_id, execution_id) or []
    failures = [
        (e.attempt, e.code, e.message, e.retryable)
        for e in history
        if isinstance(e, StepFailed) and e.step_index == index
    ]
    return respond(render.step_whole(step, blob, failures))


@doc(
    summary="Cancel an execution",
    response=ExecutionResponse,
    status=202,
    errors=[409],
    tags=["executions"],
)
@account_route("write")
async def cancel_execution(request: Request, caller: Caller) -> Response:
    """``POST /v1/executions/{execution_id}/cancel`` → 202; 409 when it has already finished."""
    execution_id = path_id(request, "execution_id", "exc")
    await commands.cancel(runtime_of(request), caller.account_id, execution_id)
    return await accepted(request, caller, execution_id)


ROUTES: list[BaseRoute] = [
    # ``me`` first: it must never be captured as an execution id.
    Route("/v1/executions/me", my_executions, methods=["GET"]),
    Route("/v1/executions/{execution_id}", get_execution, methods=["GET"]),
    Route("/v1/executions/{execution_id}/events", execution_events, methods=["GET"]),
    Route("/v1/executions/{execution_id}/steps/{step_index:int}", execution_step, methods=["GET"]),
    Route("/v1/executions/{execution_id}/cancel", cancel_execution, methods=["POST"]),
]
