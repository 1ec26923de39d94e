"""The Starlette app: routes, exception handlers and the edge middleware.

``create_app(runtime)`` builds it around an open :class:`engine.runtime.Runtime`; the caller owns
the runtime (opens and closes it), so the same app serves ``clipstream serve`` and the tests.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute

from api import docs_page, openapi
from api.errors import EXCEPTION_HANDLERS, Edge
from api.routes import (
    account,
    admin,
    collections,
    documents,
    executions,
    health,
    items,
    reporters,
    schedules,
    tools,
)
from engine.runtime import Runtime
from projections.queries import Queries


def routes() -> list[BaseRoute]:
    """Every route of the API."""
    return [
        *health.ROUTES,
        *openapi.ROUTES,
        *docs_page.ROUTES,
        *admin.ROUTES,
        *account.ROUTES,
        *items.ROUTES,
        *executions.ROUTES,
        *collections.ROUTES,
        *reporters.ROUTES,
        *schedules.ROUTES,
        *tools.ROUTES,
        *documents.ROUTES,
    ]


def create_app(runtime: Runtime) -> Starlette:
    """The HTTP API over ``runtime``."""
    app = Starlette(
        routes=routes(),
        middleware=[Middleware(Edge, max_body_bytes=runtime.settings.max_body_bytes)],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.runtime = runtime
    app.state.queries = Queries(runtime)
    return app
