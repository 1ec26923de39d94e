"""Liveness and readiness probes (no auth: orchestrators call them)."""

from __future__ import annotations

from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.auth import runtime_of
from api.errors import error_response, request_id_of
from api.openapi import doc
from api.render import respond
from api.schemas.resources import HealthOut


@doc(summary="Liveness", response=HealthOut, tags=["health"])
async def healthz(request: Request) -> Response:
    """``GET /healthz``: the process is alive and serving."""
    return respond(HealthOut(status="ok"))


@doc(summary="Readiness: Redis answers", response=HealthOut, tags=["health"])
async def readyz(request: Request) -> Response:
    """``GET /readyz``: Redis answers PING, so requests can be served."""
    try:
        await runtime_of(request).redis.ping()
    except (RedisError, OSError):
        return error_response(503, "unavailable", "Redis does not answer", request_id_of(request))
    return respond(HealthOut(status="ready"))


ROUTES: list[BaseRoute] = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
