"""Schedule runs: trigger one (``POST …/schedules/{schedule_id}/run``) and read a reporter's runs
(``GET /v1/reporters/{reporter_id}/schedule/runs`` and ``…/runs/{run_id}``).

A run is an execution of kind ``schedule_run`` (engine.schedules.runs); its ``run_id`` maps to its
``execution_id``, and the executions it starts for videos are the reporter's executions too.
"""

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
from api.routes.executions import queries_of
from api.routes.reporters import _reporter_id
from api.schemas.executions import RunList, RunResponse, RunTriggeredOut
from api.schemas.requests import ExecutionPageQuery, RunRequest
from engine.errors import NotFound
from engine.resources import reporters
from engine.schedules.runs import trigger_run


@doc(
    summary="Run a schedule now",
    semantic="a schedule whose collections hold no YouTube channel",
    request=RunRequest,
    response=RunTriggeredOut,
    status=202,
    errors=[402, 409],
    body_required=False,
    tags=["schedules"],
)
@account_route("write")
async def run_schedule(request: Request, caller: Caller) -> Response:
    """``POST /v1/reporters/{reporter_id}/schedules/{schedule_id}/run`` → 202 ``{status,
    schedule_id, run_id}``.

    ``dispatched`` charges the schedule-run fee once and starts a run: each channel of the
    schedule's collections is synced, and one execution of the schedule's workflow starts per new
    video. While a run of the schedule is in flight the answer is ``already_running`` with that
    run, and nothing is charged. 422 when the workflow does not run on videos or the collections
    hold no YouTube channel. ``Idempotency-Key`` as for other POSTs that start work.
    """
    reporter_id = _reporter_id(request)
    schedule_id = path_id(request, "schedule_id", "sch")
    await decode_body(request, RunRequest, optional=True)
    triggered = await trigger_run(
        runtime_of(request),
        caller.account_id,
        schedule_id,
        reporter_id=reporter_id,
        request_id=request_id_of(request),
        idempotency_key=request.headers.get(IDEMPOTENCY_HEADER),
    )
    return respond(render.run_triggered(triggered), 202)


@doc(
    summary="The runs of a reporter's schedules",
    response=RunList,
    query=ExecutionPageQuery,
    tags=["schedules"],
)
@account_route("read")
async def list_runs(request: Request, caller: Caller) -> Response:
    """``GET /v1/reporters/{reporter_id}/schedule/runs?limit=&cursor=`` → newest first, each with
    its timing, status and counts (the per-item events are in the run's own page)."""
    reporter_id = _reporter_id(request)
    limit, cursor = page_params(request)
    await reporters.get_reporter(runtime_of(request), caller.account_id, reporter_id)
    page = await queries_of(request).list_runs(
        caller.account_id, reporter_id, limit=limit, cursor=cursor
    )
    return respond(render.run_list(page))


@doc(summary="A schedule run with its per-item events", response=RunResponse, tags=["schedules"])
@account_route("read")
async def get_run(request: Request, caller: Caller) -> Response:
    """``GET /v1/reporters/{reporter_id}/schedule/runs/{run_id}`` → ``{run}`` with ``items``: a
    decision per video of each channel (processed with its execution id, skipped as seen, skipped
    as too old, capped, failed with the reason) and each channel that failed."""
    reporter_id = _reporter_id(request)
    run = path_id(request, "run_id", "run")
    found = await queries_of(request).get_run(caller.account_id, reporter_id, run)
    if found is None:
        raise NotFound("no such run")
    return respond(RunResponse(run=render.run_detail(found)))


ROUTES: list[BaseRoute] = [
    Route(
        "/v1/reporters/{reporter_id}/schedules/{schedule_id}/run", run_schedule, methods=["POST"]
    ),
    Route("/v1/reporters/{reporter_id}/schedule/runs", list_runs, methods=["GET"]),
    Route("/v1/reporters/{reporter_id}/schedule/runs/{run_id}", get_run, methods=["GET"]),
]
