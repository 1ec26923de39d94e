"""``GET /``: the live dashboard, a static page over the API's own endpoints.

The page (``index.html`` beside this module; ``app.js``, ``style.css`` and ``dom.js``, the DOM
helpers the console shares, under ``static/``, all shipped as package data) signs in with a
session JWT kept in ``sessionStorage``, follows ``GET /v1/realtime`` and reads ``GET /v1/me``,
``GET /v1/executions/me`` and ``GET /v1/executions/{id}`` with that token. No build step and
nothing from another host: the API may run where there is no internet.

The page is served with a strict Content-Security-Policy: scripts and styles only from this
origin (no inline code), connections only to this origin (``'self'`` covers the same-origin
WebSocket), no framing, and no form may submit anywhere, so a session token typed into the
sign-in form can never end up in a URL even when the script failed to load.
"""

from __future__ import annotations

import functools
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from api.openapi import doc

HERE = Path(__file__).resolve().parent
# Only the assets are served as files: not this module, nor the page without its headers.
STATIC_DIR = HERE / "static"
ASSETS_PATH = "/dashboard"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The page is small and changes with the deployed version: always revalidate.
    "Cache-Control": "no-cache",
}


@functools.cache
def _html(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def html_page(path: Path) -> HTMLResponse:
    """The HTML file at ``path`` (read once per process) under the strict page headers: the
    dashboard's and the operator console's pages."""
    return HTMLResponse(_html(path), headers=PAGE_HEADERS)


@doc(
    summary="The live dashboard (HTML)",
    response=str,
    tags=["meta"],
    media_type="text/html",
    description=(
        "A page for people: sign in with a session token and watch your executions update live "
        "over `GET /v1/realtime`, then open one to see its steps. API clients start at "
        "`GET /docs` or `GET /openapi.json`, which the page links to."
    ),
)
async def dashboard(request: Request) -> Response:
    """``GET /``: the dashboard page; its script and styles are under ``/dashboard/``."""
    return html_page(HERE / "index.html")


ROUTES: list[BaseRoute] = [
    Route("/", dashboard, methods=["GET"]),
    Mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="dashboard"),
]
