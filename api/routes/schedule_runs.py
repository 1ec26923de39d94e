"""Schedule runs: trigger one (``POST …/schedules/{schedule_id}/run``) and read a reporter's runs
(``GET /v1/reporters/{reporter_id}/schedule/runs`` and ``…/runs/{run_id}``).

A run is an execution of kind ``schedule_run`` (engine.schedules.runs); its ``run_id`` maps to its
``execution_id``, and the executions it starts for videos are the reporter's executions too.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.auth import Caller, account_route, runtime_of
from api.errors import request_id_of
from api.openapi import doc
from api.routes.executions import queries_of
from api.routes.reporters import _reporter_id
from api.schemas import (
    IDEMPOTENCY_HEADER,
    ErrorOut,
    PageQuery,
    decode_body,
    page_params,
    path_id,
    respond,
)
from engine.errors import NotFound
from engine.log.events import RunOutcome, Status
from engine.resources import reporters
from engine.schedules.runs import trigger_run


class RunRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """``POST …/schedules/{schedule_id}/run``: no fields (the body may be empty)."""


class RunTriggeredOut(msgspec.Struct, kw_only=True):
    """``dispatched``: a run started (or the one this Idempotency-Key started); its fee was
    charged once. ``already_running``: a run of the schedule is in flight (``run_id``); nothing
    started, nothing charged."""

    status: Literal["dispatched", "already_running"]
    schedule_id: str
    run_id: str


class RunCounts(msgspec.Struct, kw_only=True):
    """How many videos (and, under ``failed``, channels) ended each way."""

    processed: int
    skipped_seen: int
    skipped_too_old: int
    capped: int
    failed: int


class RunSummaryOut(msgspec.Struct, kw_only=True):
    """A schedule run: timing, status, channels and outcome counts. ``execution_id`` is the
    execution the run is (``GET /v1/executions/{execution_id}`` has its steps)."""

    run_id: str
    execution_id: str
    schedule_id: str | None
    reporter_id: str | None
    status: Status
    error: ErrorOut | None
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    fee_coins: float
    channels_total: int
    channels_done: int
    channels_failed: int
    counts: RunCounts


class RunItemOut(msgspec.Struct, kw_only=True):
    """One per-item event of a run: a decision about a video (``execution_id``: the execution
    started for it, or for ``skipped_seen`` the one an earlier run started), or a channel that
    failed (no ``video_id``; ``reason`` says why)."""

    outcome: RunOutcome
    item_id: str | None
    collection_id: str | None
    channel_id: str | None
    video_id: str | None
    title: str
    published_at: str | None
    execution_id: str | None
    reason: str
    at: str | None


class RunDetailOut(RunSummaryOut, kw_only=True):
    items: list[RunItemOut]


class RunList(msgspec.Struct, kw_only=True):
    runs: list[RunSummaryOut]
    next_cursor: str | None


class RunResponse(msgspec.Struct, kw_only=True):
    run: RunDetailOut


@doc(
    summary="Run a schedule now",
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
    body = {
        "status": triggered.status,
        "schedule_id": triggered.schedule_id,
        "run_id": triggered.run_id,
    }
    return respond(body, 202)


@doc(
    summary="The runs of a reporter's schedules",
    response=RunList,
    query=PageQuery,
    tags=["schedules"],
)
@account_route("read")
async def list_runs(request: Request, caller: Caller) -> Response:
    """``GET /v1/reporters/{reporter_id}/schedule/runs?limit=&cursor=`` → newest first, each with
    its timing, status and counts (the per-item events are in the run's own page)."""
    reporter_id = _reporter_id(request)
    limit, cursor = page_params(request)
    await reporters.get_reporter(runtime_of(request), caller.account_id, reporter_id)
    runs, next_cursor = await queries_of(request).list_runs(
        caller.account_id, reporter_id, limit=limit, cursor=cursor
    )
    return respond({"runs": runs, "next_cursor": next_cursor})


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
    return respond({"run": found})


ROUTES: list[BaseRoute] = [
    Route(
        "/v1/reporters/{reporter_id}/schedules/{schedule_id}/run", run_schedule, methods=["POST"]
    ),
    Route("/v1/reporters/{reporter_id}/schedule/runs", list_runs, methods=["GET"]),
    Route("/v1/reporters/{reporter_id}/schedule/runs/{run_id}", get_run, methods=["GET"]),
]
