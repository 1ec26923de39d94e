"""The realtime feed at the HTTP edge (DESIGN §8): a WebSocket for browsers and an SSE stream for
integrations, both over the process's :class:`api.realtime.hub.FeedHub`.

``GET /v1/realtime?token=<session JWT>[&since=<cursor>]`` (WebSocket): a session JWT only (an API
key in a URL would end up in browser history and proxy logs), and a browser's ``Origin`` must be
allowed (``CLIPSTREAM_ALLOWED_ORIGINS``, comma-separated; by default the API's own origin and
localhost). Any refusal is close code 4401 right after the handshake, before any message (a bad
token spends one of the address's failed authentications, api.rate_limits). Then:

    {"type": "reset", "cursor", "executions": [...]}     no (or a too old) cursor: a snapshot
    {"type": "event", "cursor", "execution_id", "seq", "event", "execution": {...}}
    {"type": "ping"}                                     when idle (FeedHub.ping_s: 15-30 s)

A slow client is closed with code 4008 and the reason; it reconnects with its last cursor. The
connection is closed with 4401 when its token expires or its account's sessions are revoked
(api.sessions); the client reconnects with a new token and its cursor.

``GET /v1/executions/stream`` (Server-Sent Events): API key or session token in the Authorization
header; any ``Accept`` that admits ``text/event-stream`` (by name, ``text/*``, ``*/*`` or none)
streams and one that excludes it is 406; ``Last-Event-ID`` (or ``?since=``) resumes; each
message's ``id:`` is its cursor. A session token's stream ends like the WebSocket, with a
``closed`` event giving the reason; an API key's when that key is revoked (``api key revoked``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from urllib.parse import parse_qsl, urlsplit

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from api.auth import UNAUTHORIZED, Caller, account_route, bearer, runtime_of, verify_session
from api.openapi import doc
from api.rate_limits import Limiter, RateLimited
from api.realtime.hub import FeedHub
from api.realtime.subscription import (
    SESSION_EXPIRED,
    SESSION_REVOKED,
    SLOW_CONSUMER,
    FeedClosed,
    Subscription,
)
from api.render import Message, encode
from api.sessions import Session
from engine.money.accounts import API_KEY_PREFIX, key_hash
from engine.runtime import Runtime

log = logging.getLogger("clipstream.realtime")

ORIGINS_ENV = "CLIPSTREAM_ALLOWED_ORIGINS"
CLOSE_UNAUTHORIZED = 4401
CLOSE_SLOW = 4008
CLOSE_RESTART = 1012  # "service restart": the client reconnects with its cursor
CLOSE_GRACE_S = 5.0  # how long the close of a hub-ended subscription may wait on the client
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
EVENT_STREAM = "text/event-stream"
CLIENT_GONE = "client gone"
REALTIME_PATH = "/v1/realtime"


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


def session_of(runtime: Runtime, token: str | None) -> Session | None:
    """The session of a valid session JWT; None for anything else, API keys included."""
    if not token or token.startswith(API_KEY_PREFIX):
        return None
    return verify_session(runtime, token)


def session_account(runtime: Runtime, token: str | None) -> str | None:
    """The account of a valid session JWT; None for anything else, API keys included."""
    session = session_of(runtime, token)
    return None if session is None else session.account_id


def hub_of(app_state: object) -> FeedHub:
    hub: FeedHub = app_state.feed_hub  # type: ignore[attr-defined]
    return hub


def _json(message: Message) -> str:
    return encode(message).decode()


# -- WebSocket -----------------------------------------------------------------------------------
async def realtime(scope: Scope, receive: Receive, send: Send) -> None:
    """``GET /v1/realtime``, on bare ASGI (:class:`RealtimeApp` routes it here).

    A WebSocket lives as long as its client, 10,000 of them per process, so it keeps only what
    it needs: no Starlette ``WebSocket`` (whose parsed headers and query parameters would stay
    alive with it), no generator or cancel scope, one coroutine frame for the sending (this
    one, which the subscription's end cancels out of a blocked send) and one bare asyncio task
    listening for the client's close.
    """
    app = scope["app"]
    runtime: Runtime = app.state.runtime
    limiter: Limiter = app.state.limiter
    token, since, origin, host, authorization = _handshake(scope)
    client = scope.get("client")
    address = client[0] if client else "unknown"
    # The rate limits every request passes (api.rate_limits.RateLimits).
    try:
        await limiter.admit_address(address, with_credential=token is not None or authorization)
    except RateLimited:
        await send({"type": "websocket.close", "code": 1008, "reason": "rate_limited"})
        return
    session = session_of(runtime, token)
    # Accept first so the refusal carries its code (a close before accept is a bare 403).
    if (await receive())["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    # What the handshake brought (the headers: a kilobyte or two from a browser; the query string,
    # token included) is read: the server keeps the scope for the connection's lifetime, not them.
    scope["headers"] = []
    scope["query_string"] = b""
    if session is None or (
        origin is not None and not origin_allowed(origin, host, allowed_origins())
    ):
        if session is None:  # a failed token check spends the address's failed-auth budget
            with contextlib.suppress(RateLimited):
                await limiter.hit(limiter.auth, address)
        with contextlib.suppress(OSError):
            await send({"type": "websocket.close", "code": CLOSE_UNAUTHORIZED,
                        "reason": UNAUTHORIZED})  # fmt: skip
        return
    del token, origin, host  # (this frame lives as long as the connection: the token need not)
    grace_s: float = getattr(app.state, "realtime_close_grace_s", CLOSE_GRACE_S)
    hub = hub_of(app.state)
    sub = await hub.open(session.account_id, since, session)
    # One more task listens for the client's close (a bare asyncio task: anyio's task group
    # adds kilobytes per connection, and uvicorn serves on asyncio); it is done once it saw it.
    listener = asyncio.get_running_loop().create_task(_listen(receive, sub))
    this = asyncio.current_task()
    assert this is not None
    gone = False
    try:
        # The subscription's end cancels this task (a send blocked on a client that stopped
        # reading, or the wait for the next frame): FeedClosed or that cancel, the same end.
        sub.on_close = this.cancel
        try:
            while True:
                frame = sub.poll() or await sub.receive_frame()
                await send({"type": "websocket.send", "text": frame.text})
                if frame.is_event:
                    hub.delivered(frame)
        except FeedClosed:
            pass
        except asyncio.CancelledError:
            if sub.reason is None:
                raise  # not the hub's doing: the server's
            this.uncancel()
        except OSError:  # the connection broke under a send (uvicorn's ClientDisconnected)
            gone = True
        finally:
            sub.on_close = None
        reason = sub.reason or ""
        if reason == SLOW_CONSUMER:
            log.info(
                "closing a slow realtime subscriber of %s (%d)", session.account_id, CLOSE_SLOW
            )
        if not gone and not (listener.done() and not listener.cancelled()):
            # The close frame waits behind what the client has not read yet: a client that
            # stopped reading gets it if it wakes up within the grace; one that never does
            # is not waited for.
            with anyio.move_on_after(grace_s), contextlib.suppress(OSError, RuntimeError):
                await send(
                    {"type": "websocket.close", "code": close_code(reason), "reason": reason}
                )
    finally:
        sub.close("unsubscribed")
        listener.cancel()
        await asyncio.wait([listener])  # (never raises: this task's own cancel still does)


def _handshake(scope: Scope) -> tuple[str | None, str | None, str | None, str | None, bool]:
    """The ``token`` and ``since`` query parameters and the ``Origin`` and ``Host`` headers of
    a WebSocket's handshake (the first of each), and whether it has an ``Authorization`` header,
    read from the scope without keeping anything."""
    token = since = origin = host = None
    authorization = False
    query = scope.get("query_string", b"").decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name == "token" and token is None:
            token = value
        elif name == "since" and since is None:
            since = value
    for raw_name, raw_value in scope.get("headers", ()):
        if raw_name == b"origin" and origin is None:
            origin = raw_value.decode("latin-1")
        elif raw_name == b"host" and host is None:
            host = raw_value.decode("latin-1")
        elif raw_name == b"authorization":
            authorization = True
    return token, since, origin, host, authorization


def close_code(reason: str) -> int:
    """The close code when the hub ended a subscription: 4008 for a slow consumer and 4401 for a
    session that expired or was revoked (the client needs a new token), else 1012 (service
    restart); either way the client reconnects with its last cursor."""
    if reason == SLOW_CONSUMER:
        return CLOSE_SLOW
    if reason in (SESSION_EXPIRED, SESSION_REVOKED):
        return CLOSE_UNAUTHORIZED
    return CLOSE_RESTART


async def _listen(receive: Receive, sub: Subscription) -> None:
    """Wait for the client's close; then end the subscription (which stops the sending)."""
    with contextlib.suppress(OSError):
        while (await receive())["type"] != "websocket.disconnect":
            pass
    sub.close(CLIENT_GONE)


# -- Server-Sent Events --------------------------------------------------------------------------
def sse(message: Message) -> bytes:
    """One SSE frame: ``id:`` is the cursor, ``event:`` the message type (the feed's own frames
    are encoded once by the hub: ``Frame.sse``)."""
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
    # A session's stream ends when its token expires or is revoked, an API key's when it is
    # revoked.
    token = bearer(request)
    session = session_of(runtime_of(request), token) if caller.via == "session" else None
    api_key = key_hash(token) if caller.via == "api_key" and token is not None else None

    async def frames() -> AsyncIterator[bytes]:
        async with hub.subscribe(caller.account_id, since, session, api_key) as sub:
            while True:
                try:
                    frame = sub.poll() or await sub.receive_frame()
                except FeedClosed as closed:
                    yield sse({"type": "closed", "reason": closed.reason})
                    return
                yield frame.sse  # a ping is an SSE comment
                if frame.is_event:
                    hub.delivered(frame)

    return StreamingResponse(
        frames(),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


class RealtimeApp(Starlette):
    """The app: a Starlette application whose ``/v1/realtime`` WebSockets go straight to
    :func:`realtime` (which applies the rate limits itself), before its middleware stack.

    A WebSocket lives as long as its client, and every layer it passes through keeps a coroutine
    frame alive all that time: the error middleware, the meters, the rest of the middleware
    (which let WebSockets through untouched), the router; kilobytes per connection, 10,000
    connections per process. The route stays in ``ROUTES`` for the documentation."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == REALTIME_PATH:
            scope["app"] = self
            await realtime(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


async def _realtime_route(ws: WebSocket) -> None:
    await realtime(ws.scope, ws.receive, ws.send)


# ``/v1/executions/stream`` must come before ``/v1/executions/{execution_id}`` in the app.
ROUTES: list[BaseRoute] = [
    WebSocketRoute(REALTIME_PATH, _realtime_route),
    Route("/v1/executions/stream", stream, methods=["GET"]),
]
