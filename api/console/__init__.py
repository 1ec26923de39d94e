"""``GET /admin/console``: the operator console, a static page over the admin API.

The system as a whole, for operators, where the dashboard at ``/`` is one account's view: every
partition's queue depth, lag and checkpoint; the live workers, projectors and archivers with the
leases they hold (schedulers hold none: the schedules' overdue time shows whether they run); the
dead letters, each with a retry button; the executions accepted, done and in error over the last
ten minutes as a small chart; and any execution opened by its id with its event history.

The page (``index.html`` beside this module; ``console.js`` and ``console.css`` under ``static/``,
shipped as package data, the dashboard's ``style.css`` and ``dom.js`` reused) signs in with
the admin token, kept in ``sessionStorage`` and sent only in the ``Authorization`` header, and
polls ``GET /admin/overview`` every two seconds (``GET /admin/dead-letters`` when their count
moves, ``POST /admin/dead-letters/{id}/retry`` and ``GET /admin/executions/{id}`` on request). It
is served under the dashboard's strict Content-Security-Policy: no build step, no inline code and
nothing from another host; the chart is SVG drawn by the script.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.dashboard import html_page
from api.openapi import doc

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
ASSETS_PATH = "/admin/console/assets"


@doc(
    summary="The operator console (HTML)",
    response=str,
    tags=["admin"],
    media_type="text/html",
    description=(
        "A page for operators: sign in with the admin token to watch every partition's queues, "
        "lag and checkpoints, the workers, projectors and archivers with their leases, the dead "
        "letters (with a retry button) and the rate of executions and errors, live; and open "
        "any execution's event history. The page itself is public; everything it shows comes "
        "from the admin routes, which need the token."
    ),
)
async def console(request: Request) -> Response:
    """``GET /admin/console``: the console page; its script and styles are under
    ``/admin/console/assets/``."""
    return html_page(HERE / "index.html")


ROUTES: list[BaseRoute] = [
    Route("/admin/console", console, methods=["GET"]),
    Mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="console"),
]
