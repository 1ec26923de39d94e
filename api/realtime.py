"""The realtime feed at the HTTP edge (DESIGN §8): a WebSocket for browsers and an SSE stream for
integrations, both over the process's :class:`api.feed_hub.FeedHub`.

``GET /v1/realtime?token=<session JWT>[&since=<cursor>]`` (WebSocket): a session JWT only (an API
key in a URL would end up in browser history and proxy logs), and a browser's ``Origin`` must be
allowed (``CLIPSTREAM_ALLOWED_ORIGINS``, comma-separated; by default the API's own origin and
localhost). Any refusal is close code 4401 right after the handshake, before any message. Then:

    {"type": "reset", "cursor", "executions": [...]}     no (or a too old) cursor: a snapshot
    {"type": "event", "cursor", "execution_id", "seq", "event", "execution": {...}}
    {"type": "ping"}                                     every ``PING_S`` without traffic

A slow client is closed with code 4008 and the reason; it reconnects with its last cursor.

``GET /v1/executions/stream`` (Server-Sent Events): API key or session token in the Authorization
header; any ``Accept`` that admits ``text/event-stream`` (by name, ``text/*``, ``*/*`` or none)
streams and one that excludes it is 406; ``Last-Event-ID`` (or ``?since=``) resumes; each
message's ``id:`` is its cursor.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.auth import Caller, account_route, verify_session_token
from api.feed_hub import SLOW_CONSUMER, FeedClosed, FeedHub, Subscription
from api.openapi import doc
from api.render import Message, encode
from engine.money.accounts import API_KEY_PREFIX
from engine.runtime import Runtime

log = logging.getLogger("clipstream.realtime")

ORIGINS_ENV = "CLIPSTREAM_ALLOWED_ORIGINS"
PING_S = 15.0
CLOSE_UNAUTHORIZED = 4401
CLOSE_SLOW = 4008
CLOSE_RESTART = 1012  # "service restart": the client reconnects with its cursor
CLOSE_GRACE_S = 5.0  # how long the close of a hub-ended subscription may wait on the client
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
EVENT_STREAM = "text/event-stream"
_PING = encode({"type": "ping"}).decode()


def allowed_origins() -> frozenset[str] | None:
    """The configured Origin allowlist (``scheme://host[:port]`` each), or None for the default
    (the API's own origin and localhost)."""
    raw = os.environ.get(ORIGINS_ENV, "").strip()
    if not raw:
        return None
    return frozenset(o.strip().rstrip("/").lower() for o in raw.split(",") if o.strip())


def origin_allowed(origin: str, host: str | None, allowlist: frozenset[str] | None) -> bool:
    """Whether a browser page at ``origin`` may open the feed of the server reached as ``host``."""
    origin = origin.strip().rstrip("/").lower()
    if allowlist is not None:
        return origin in allowlist
    parts = urlsplit(origin)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False  # "null" (a sandboxed page, a file) and anything odd
    if host is not None and parts.netloc == host.strip().lower():
        return True  # same origin
    return parts.hostname in _LOCAL_HOSTS


def session_account(runtime: Runtime, token: str | None) -> str | None:
    """The account of a valid session JWT; None for anything else, API keys included."""
    if not token or token.startswith(API_KEY_PREFIX):
        return None
    return verify_session_token(runtime, token)


def hub_of(app_state: object) -> FeedHub:
    hub: FeedHub = app_state.feed_hub  # type: ignore[attr-defined]
    return hub


def _json(message: Message) -> str:
    return encode(message).decode()


# -- WebSocket -----------------------------------------------------------------------------------
async def realtime(ws: WebSocket) -> None:
    """``GET /v1/realtime``."""
    runtime: Runtime = ws.app.state.runtime
    origin = ws.headers.get("origin")
    account = session_account(runtime, ws.query_params.get("token"))
    # Accept first so the refusal carries its code (a close before accept is a bare 403).
    await ws.accept()
    if account is None or (
        origin is not None and not origin_allowed(origin, ws.headers.get("host"), allowed_origins())
    ):
        await ws.close(CLOSE_UNAUTHORIZED, "missing or invalid credentials")
        return
    ping_s: float = getattr(ws.app.state, "realtime_ping_s", PING_S)
    grace_s: float = getattr(ws.app.state, "realtime_close_grace_s", CLOSE_GRACE_S)
    async with hub_of(ws.app.state).subscribe(account, ws.query_params.get("since")) as sub:
        gone = await _forward(ws, sub, ping_s)
        reason = sub.reason or ""
    if reason == SLOW_CONSUMER:
        log.info("closing a slow realtime subscriber of %s (%d)", account, CLOSE_SLOW)
    if not gone:
        # The close frame waits behind what the client has not read yet: a client that stopped
        # reading gets it if it wakes up within the grace; one that never does is not waited for.
        with (
            anyio.move_on_after(grace_s),
            contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError),
        ):
            await ws.close(close_code(reason), reason)


def close_code(reason: str) -> int:
    """The close code when the hub ended a subscription: 4008 for a slow consumer, else 1012
    (service restart); either way the client reconnects with its last cursor."""
    return CLOSE_SLOW if reason == SLOW_CONSUMER else CLOSE_RESTART


async def _forward(ws: WebSocket, sub: Subscription, ping_s: float) -> bool:
    """Send ``sub``'s messages (and pings while idle) until the hub closes it or the client goes;
    True when the client went (there is no one left to send a close to)."""
    gone = False
    async with anyio.create_task_group() as tg:

        async def pump() -> None:
            nonlocal gone
            try:
                while True:
                    with anyio.move_on_after(ping_s) as idle:
                        message = await sub.receive()
                    await ws.send_text(_PING if idle.cancelled_caught else _json(message))
            except FeedClosed:
                pass
            except WebSocketDisconnect:
                gone = True  # the connection broke under a send (uvicorn says so on the send)
            tg.cancel_scope.cancel()

        async def closer() -> None:
            # A send blocked on a client that stopped reading must not keep it open.
            await sub.closed.wait()
            tg.cancel_scope.cancel()

        async def listen() -> None:
            nonlocal gone
            try:
                while True:
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
            except (WebSocketDisconnect, RuntimeError):
                pass
            gone = True
            tg.cancel_scope.cancel()

        tg.start_soon(pump)
        tg.start_soon(closer)
        tg.start_soon(listen)
    return gone


# -- Server-Sent Events --------------------------------------------------------------------------
def sse(message: Message) -> bytes:
    """One SSE frame: ``id:`` is the cursor, ``event:`` the message type."""
    head = f"id: {message['cursor']}\n" if "cursor" in message else ""
    return f"{head}event: {message['type']}\ndata: {_json(message)}\n\n".encode()


def accepts_event_stream(accept: str | None) -> bool:
    """Whether an ``Accept`` header value admits ``text/event-stream`` (RFC 9110 §12.5.1).

    No header admits anything; otherwise the most specific matching media range decides
    (``text/event-stream`` over ``text/*`` over ``*/*``) and admits it when its quality is above
    0. So ``*/*`` (what curl and httpx send), ``text/*`` and a missing header stream; only a
    header that leaves the stream out, or weighs it 0, does not.
    """
    if accept is None or not accept.strip():
        return True
    best: tuple[int, float] | None = None  # (specificity, quality) of the best match so far
    for media_range in accept.split(","):
        media, *params = (part.strip() for part in media_range.split(";"))
        specificity = _MATCHES.get(media.lower())
        if specificity is None:
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0  # a malformed weight asks for nothing
        if best is None or specificity > best[0]:
            best = (specificity, quality)
    return best is not None and best[1] > 0


_MATCHES = {EVENT_STREAM: 2, "text/*": 1, "*/*": 0}


@doc(
    summary="The caller's executions as they change (Server-Sent Events)",
    tags=["executions"],
    media_type=EVENT_STREAM,
    description=(
        "One `event` per execution event (`id:` is the cursor; `Last-Event-ID` resumes), a "
        "`reset` snapshot of the active executions when there is no cursor or it is older than "
        "what is kept, `: ping` comments while idle, and a final `closed` event with a reason "
        "when the server ends the stream.\n\n"
        "Any `Accept` that admits `text/event-stream` gets the stream: the type by name "
        "(EventSource), `text/*`, `*/*` (what curl and httpx send) or no `Accept` at all. "
        "One that leaves it out (`application/json`) or weighs it 0 "
        "(`text/event-stream;q=0`) is `406 not_acceptable`: the only representation is a body "
        "that never ends. A client that buffers whole bodies must read this one as a stream."
    ),
    errors=[406],
)
@account_route("read")
async def stream(request: Request, caller: Caller) -> Response:
    """``GET /v1/executions/stream``."""
    accept = request.headers.getlist("accept")
    if not accepts_event_stream(", ".join(accept) if accept else None):
        raise HTTPException(
            406, "this endpoint only streams text/event-stream, which the Accept header excludes"
        )
    since = request.headers.get("last-event-id") or request.query_params.get("since")
    hub = hub_of(request.app.state)
    ping_s: float = getattr(request.app.state, "realtime_ping_s", PING_S)

    async def frames() -> AsyncIterator[bytes]:
        async with hub.subscribe(caller.account_id, since) as sub:
            while True:
                try:
                    with anyio.move_on_after(ping_s) as idle:
                        message = await sub.receive()
                except FeedClosed as closed:
                    yield sse({"type": "closed", "reason": closed.reason})
                    return
                yield b": ping\n\n" if idle.cancelled_caught else sse(message)

    return StreamingResponse(
        frames(),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


# ``/v1/executions/stream`` must come before ``/v1/executions/{execution_id}`` in the app.
ROUTES: list[BaseRoute] = [
    WebSocketRoute("/v1/realtime", realtime),
    Route("/v1/executions/stream", stream, methods=["GET"]),
]
