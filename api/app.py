"""The Starlette app: routes, exception handlers and the middleware (outermost first: the request
meters of api.metrics, the edge of api.errors, the abuse limits of api.rate_limits, the read
charges of api.read_charging); the realtime WebSocket enters before them
(api.realtime.endpoints.RealtimeApp).

``create_app(runtime)`` builds it around an open :class:`engine.runtime.Runtime`; the caller owns
the runtime (opens and closes it), so the same app serves ``clipstream serve`` and the tests.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from api import console, dashboard, docs_page, metrics, openapi
from api.auth import verify_session
from api.errors import EXCEPTION_HANDLERS, Edge
from api.metrics import RequestMeters
from api.rate_limits import Limiter, RateLimits
from api.read_charging import ChargeReads
from api.realtime import endpoints as realtime
from api.realtime.hub import FeedHub
from api.routes import (
    account,
    admin,
    collections,
    documents,
    executions,
    health,
    items,
    reporters,
    schedule_runs,
    schedules,
    tools,
)
from engine.money.read_fees import ReadFees
from engine.runtime import Runtime
from projections.queries import Queries


def routes() -> list[BaseRoute]:
    """Every route of the API."""
    return [
        *health.ROUTES,
        *metrics.ROUTES,
        *openapi.ROUTES,
        *docs_page.ROUTES,
        *admin.ROUTES,
        *console.ROUTES,  # GET /admin/console and its assets
        *account.ROUTES,
        *items.ROUTES,
        *realtime.ROUTES,  # /v1/executions/stream before /v1/executions/{execution_id}
        *executions.ROUTES,
        *collections.ROUTES,
        *reporters.ROUTES,
        *schedules.ROUTES,
        *schedule_runs.ROUTES,
        *tools.ROUTES,
        *documents.ROUTES,
        *dashboard.ROUTES,  # GET / and its assets under /dashboard/
    ]


def create_app(runtime: Runtime) -> Starlette:
    """The HTTP API over ``runtime``."""
    hub = FeedHub(runtime)
    read_fees = ReadFees(runtime)
    limiter = Limiter(runtime, sessions=functools.partial(verify_session, runtime))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # The realtime feed's one reader for this process lives as long as the app, and so does
        # the retry-and-sweep loop of read charges.
        async with anyio.create_task_group() as tg:
            tg.start_soon(hub.run)
            tg.start_soon(read_fees.run)
            yield
            tg.cancel_scope.cancel()

    every_route = routes()
    # (/v1/realtime's WebSockets enter before the middleware: realtime.RealtimeApp)
    app = realtime.RealtimeApp(
        routes=every_route,
        lifespan=lifespan,
        middleware=[
            Middleware(RequestMeters, routes=every_route),
            Middleware(Edge, max_body_bytes=runtime.settings.max_body_bytes),
            Middleware(RateLimits, limiter=limiter),
            Middleware(ChargeReads, fees=read_fees),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.runtime = runtime
    app.state.read_fees = read_fees
    app.state.limiter = limiter
    app.state.queries = Queries(runtime)
    app.state.feed_hub = hub
    return app
