"""Reporters (``/v1/reporters``), their workflows and the workflows' steps; running a reporter
over a source or a collection (202 ``{execution}``) and listing its executions."""

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
from api.schemas.executions import ExecutionList, ExecutionResponse
from api.schemas.requests import (
    CreateReporter,
    CreateStep,
    CreateWorkflow,
    ExecutionPageQuery,
    ProcessCollectionRequest,
    ProcessRequest,
    ReplaceSteps,
    ReporterPageQuery,
    UpdateReporter,
    UpdateWorkflow,
    WorkflowPageQuery,
    changes,
)
from api.schemas.resources import (
    ReporterList,
    ReporterResponse,
    StepResponse,
    WorkflowList,
    WorkflowResponse,
)
from engine import commands
from engine.errors import NotFound
from engine.log.ids import is_id
from engine.resources import reporters
from engine.tools.catalog import check_step


def _reporter_id(request: Request) -> str:
    return path_id(request, "reporter_id", "rep")


def _ids(request: Request) -> tuple[str, str]:
    return _reporter_id(request), path_id(request, "workflow_id", "wf")


# -- reporters -----------------------------------------------------------------------------------


@doc(
    summary="Create a reporter",
    semantic="a default_workflow_id that is not a workflow of this reporter",
    request=CreateReporter,
    response=ReporterResponse,
    status=201,
    errors=[403],  # quota_exceeded
    tags=["reporters"],
)
@account_route("write")
async def create_reporter(request: Request, caller: Caller) -> Response:
    """``POST /v1/reporters`` → 201 ``{reporter}``."""
    body = await decode_body(request, CreateReporter)
    created = await reporters.create_reporter(runtime_of(request), caller.account_id, changes(body))
    return respond(ReporterResponse(reporter=render.reporter(created)), 201)


@doc(summary="List reporters", response=ReporterList, query=ReporterPageQuery, tags=["reporters"])
@account_route("read")
async def list_reporters(request: Request, caller: Caller) -> Response:
    """``GET /v1/reporters?limit=&cursor=`` → newest first."""
    limit, cursor = page_params(request)
    page, next_cursor = await reporters.list_reporters(
        runtime_of(request), caller.account_id, limit=limit, cursor=cursor
    )
    return respond(
        ReporterList(reporters=[render.reporter(r) for r in page], next_cursor=next_cursor)
    )


@doc(summary="A reporter", response=ReporterResponse, tags=["reporters"])
@account_route("read")
async def get_reporter(request: Request, caller: Caller) -> Response:
    """``GET /v1/reporters/{reporter_id}``."""
    found = await reporters.get_reporter(
        runtime_of(request), caller.account_id, _reporter_id(request)
    )
    return respond(ReporterResponse(reporter=render.reporter(found)))


@doc(
    summary="Update a reporter",
    semantic="a default_workflow_id that is not a workflow of this reporter",
    request=UpdateReporter,
    response=ReporterResponse,
    errors=[409],
    tags=["reporters"],
)
@account_route("write")
async def update_reporter(request: Request, caller: Caller) -> Response:
    """``PATCH /v1/reporters/{reporter_id}``; ``default_workflow_id`` must be its own."""
    reporter_id = _reporter_id(request)
    body = await decode_body(request, UpdateReporter)
    updated = await reporters.update_reporter(
        runtime_of(request), caller.account_id, reporter_id, changes(body)
    )
    return respond(ReporterResponse(reporter=render.reporter(updated)))


@doc(
    summary="Delete a reporter, its workflows and schedules",
    status=204,
    errors=[409],
    tags=["reporters"],
)
@account_route("write")
async def delete_reporter(request: Request, caller: Caller) -> Response:
    """``DELETE /v1/reporters/{reporter_id}`` → 204, with its workflows and schedules."""
    await reporters.delete_reporter(runtime_of(request), caller.account_id, _reporter_id(request))
    return Response(status_code=204)


# -- workflows -----------------------------------------------------------------------------------


@doc(
    summary="Create a workflow for a reporter",
    semantic="a step whose params do not fit its tool's params schema (GET /v1/tools)",
    request=CreateWorkflow,
    response=WorkflowResponse,
    status=201,
    errors=[403],  # quota_exceeded
    tags=["workflows"],
)
@account_route("write")
async def create_workflow(request: Request, caller: Caller) -> Response:
    """``POST /v1/reporters/{reporter_id}/workflows`` → 201 ``{workflow}``."""
    reporter_id = _reporter_id(request)
    body = await decode_body(request, CreateWorkflow)
    created = await reporters.create_workflow(
        runtime_of(request),
        caller.account_id,
        reporter_id,
        {"name": body.name, "target_kind": body.target_kind},
        body.steps,
        check_step=check_step,
    )
    return respond(WorkflowResponse(workflow=render.workflow(created)), 201)


@doc(
    summary="List a reporter's workflows",
    response=WorkflowList,
    query=WorkflowPageQuery,
    tags=["workflows"],
)
@account_route("read")
async def list_workflows(request: Request, caller: Caller) -> Response:
    """``GET /v1/reporters/{reporter_id}/workflows?limit=&cursor=`` → newest first."""
    reporter_id = _reporter_id(request)
    limit, cursor = page_params(request)
    page, next_cursor = await reporters.list_workflows(
        runtime_of(request), caller.account_id, reporter_id, limit=limit, cursor=cursor
    )
    return respond(
        WorkflowList(workflows=[render.workflow(w) for w in page], next_cursor=next_cursor)
    )


@doc(summary="A workflow with its steps", response=WorkflowResponse, tags=["workflows"])
@account_route("read")
async def get_workflow(request: Request, caller: Caller) -> Response:
    """``GET /v1/reporters/{reporter_id}/workflows/{workflow_id}``."""
    found = await reporters.get_workflow(runtime_of(request), caller.account_id, *_ids(request))
    return respond(WorkflowResponse(workflow=render.workflow(found)))


@doc(
    summary="Update a workflow",
    request=UpdateWorkflow,
    response=WorkflowResponse,
    errors=[409],
    tags=["workflows"],
)
@account_route("write")
async def update_workflow(request: Request, caller: Caller) -> Response:
    """``PATCH …/workflows/{workflow_id}`` (name, target_kind)."""
    ids = _ids(request)
    body = await decode_body(request, UpdateWorkflow)
    updated = await reporters.update_workflow(
        runtime_of(request), caller.account_id, *ids, changes(body)
    )
    return respond(WorkflowResponse(workflow=render.workflow(updated)))


@doc(summary="Delete a workflow", status=204, errors=[409], tags=["workflows"])
@account_route("write")
async def delete_workflow(request: Request, caller: Caller) -> Response:
    """``DELETE …/workflows/{workflow_id}`` → 204 (409 while a schedule runs it)."""
    await reporters.delete_workflow(runtime_of(request), caller.account_id, *_ids(request))
    return Response(status_code=204)


# -- steps ---------------------------------------------------------------------------------------


@doc(
    summary="Append a step to a workflow",
    semantic="a step whose params do not fit its tool's params schema (GET /v1/tools)",
    request=CreateStep,
    response=StepResponse,
    status=201,
    errors=[409],
    tags=["workflows"],
)
@account_route("write")
async def add_step(request: Request, caller: Caller) -> Response:
    """``POST …/workflows/{workflow_id}/steps`` → 201 ``{step, workflow}`` (appended)."""
    ids = _ids(request)
    body = await decode_body(request, CreateStep)
    workflow, step = await reporters.add_step(
        runtime_of(request), caller.account_id, *ids, body, check_step=check_step
    )
    return respond(
        StepResponse(step=render.workflow_step(step), workflow=render.workflow(workflow)), 201
    )


@doc(
    summary="Replace every step of a workflow",
    semantic=(
        "a step whose params do not fit its tool's params schema (GET /v1/tools), or more "
        "than 50 steps"
    ),
    request=ReplaceSteps,
    response=WorkflowResponse,
    errors=[409],
    tags=["workflows"],
)
@account_route("write")
async def replace_steps(request: Request, caller: Caller) -> Response:
    """``PUT …/workflows/{workflow_id}/steps {steps}`` → ``{workflow}`` with exactly those."""
    ids = _ids(request)
    body = await decode_body(request, ReplaceSteps)
    workflow = await reporters.replace_steps(
        runtime_of(request), caller.account_id, *ids, body.steps, check_step=check_step
    )
    return respond(WorkflowResponse(workflow=render.workflow(workflow)))


@doc(summary="Delete a step from a workflow", status=204, errors=[409], tags=["workflows"])
@account_route("write")
async def delete_step(request: Request, caller: Caller) -> Response:
    """``DELETE …/workflows/{workflow_id}/steps/{step_id}`` → 204."""
    ids = _ids(request)
    step_id = path_id(request, "step_id", "stp")
    await reporters.delete_step(runtime_of(request), caller.account_id, *ids, step_id)
    return Response(status_code=204)


# -- running a reporter --------------------------------------------------------------------------


def _workflow_id(value: str | None) -> str | None:
    if value is not None and not is_id(value, "wf"):
        raise NotFound("no such workflow")
    return value


@doc(
    summary="Run a reporter's workflow over a source",
    semantic=(
        "a source that is none of the known kinds; no workflow_id and no default workflow; a "
        "workflow of another reporter; a workflow whose target_kind is not the source's kind"
    ),
    request=ProcessRequest,
    response=ExecutionResponse,
    status=202,
    errors=[402, 403, 409],  # 403: a new source's item would pass the items quota
    tags=["reporters", "executions"],
)
@account_route("write")
async def process(request: Request, caller: Caller) -> Response:
    """``POST /v1/reporters/{reporter_id}/process {source, workflow_id?}`` → 202 ``{execution}``.

    The source resolves like an item (an existing item is reused). No ``workflow_id``: the
    reporter's default workflow (422 when it has none). A workflow whose ``target_kind`` does not
    fit the source is 422, before anything is charged. ``Idempotency-Key`` as for transcripts.
    """
    reporter_id = _reporter_id(request)
    body = await decode_body(request, ProcessRequest)
    result = await commands.request_process(
        runtime_of(request),
        caller.account_id,
        reporter_id,
        source=body.source,
        workflow_id=_workflow_id(body.workflow_id),
        request_id=request_id_of(request),
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
    )
    return await accepted(request, caller, result.execution_id, result.event)


@doc(
    summary="Run a reporter's workflow over every item of a collection",
    semantic=(
        "no workflow_id and no default workflow; a workflow of another reporter; a workflow "
        "that cannot run on a collection; a collection with no item the workflow fits"
    ),
    request=ProcessCollectionRequest,
    response=ExecutionResponse,
    status=202,
    errors=[402, 409],
    tags=["reporters", "executions"],
)
@account_route("write")
async def process_collection(request: Request, caller: Caller) -> Response:
    """``POST /v1/reporters/{reporter_id}/process-collection {collection_id, workflow_id?,
    max_items?}`` → 202 ``{execution}``: ONE execution; ``GET /v1/executions/{id}`` shows each
    item's progress under ``items``. It ends ``done`` when at least one item finished (failed items
    listed with their error), ``error`` only when every item failed.
    """
    reporter_id = _reporter_id(request)
    body = await decode_body(request, ProcessCollectionRequest)
    if not is_id(body.collection_id, "col"):
        raise NotFound("no such collection")
    result = await commands.request_process_collection(
        runtime_of(request),
        caller.account_id,
        reporter_id,
        collection_id=body.collection_id,
        workflow_id=_workflow_id(body.workflow_id),
        max_items=body.max_items,
        request_id=request_id_of(request),
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
    )
    return await accepted(request, caller, result.execution_id, result.event)


@doc(
    summary="A reporter's executions (scheduled runs too)",
    response=ExecutionList,
    query=ExecutionPageQuery,
    tags=["reporters", "executions"],
)
@account_route("read")
async def reporter_executions(request: Request, caller: Caller) -> Response:
    """``GET /v1/reporters/{reporter_id}/executions?limit=&cursor=`` → newest first."""
    reporter_id = _reporter_id(request)
    limit, cursor = page_params(request)
    await reporters.get_reporter(runtime_of(request), caller.account_id, reporter_id)
    page = await queries_of(request).list_reporter_executions(
        caller.account_id, reporter_id, limit=limit, cursor=cursor
    )
    return respond(render.execution_list(page))


_WF = "/v1/reporters/{reporter_id}/workflows"

ROUTES: list[BaseRoute] = [
    Route("/v1/reporters", create_reporter, methods=["POST"]),
    Route("/v1/reporters", list_reporters, methods=["GET"]),
    Route("/v1/reporters/{reporter_id}", get_reporter, methods=["GET"]),
    Route("/v1/reporters/{reporter_id}", update_reporter, methods=["PATCH"]),
    Route("/v1/reporters/{reporter_id}", delete_reporter, methods=["DELETE"]),
    Route("/v1/reporters/{reporter_id}/process", process, methods=["POST"]),
    Route("/v1/reporters/{reporter_id}/process-collection", process_collection, methods=["POST"]),
    Route("/v1/reporters/{reporter_id}/executions", reporter_executions, methods=["GET"]),
    Route(_WF, create_workflow, methods=["POST"]),
    Route(_WF, list_workflows, methods=["GET"]),
    Route(_WF + "/{workflow_id}", get_workflow, methods=["GET"]),
    Route(_WF + "/{workflow_id}", update_workflow, methods=["PATCH"]),
    Route(_WF + "/{workflow_id}", delete_workflow, methods=["DELETE"]),
    Route(_WF + "/{workflow_id}/steps", add_step, methods=["POST"]),
    Route(_WF + "/{workflow_id}/steps", replace_steps, methods=["PUT"]),
    Route(_WF + "/{workflow_id}/steps/{step_id}", delete_step, methods=["DELETE"]),
]
