"""Every error the API answers, in one shape, and the edge every request passes through.

Body of every error (DESIGN §7)::

    {"error": {"code": "...", "message": "...", "request_id": "req_…"}, "erro": "<message>"}

``erro`` keeps clients written for the platform's original error shape working.

Engine errors map by their ``code``; HTTP errors by status; Redis failures that escaped the store
are ``503 unavailable``; anything else is ``500 internal`` with a generic message (the details go
to the log, never to the client).

:class:`Edge` is the outermost ASGI middleware: it gives every request an id (the client's
``X-Request-ID`` when it is short and plain — 1 to 64 letters, digits, ``.``, ``_`` or ``-``,
starting with a letter or digit — else a fresh ``req_…``, so what is echoed and logged is never
the client's arbitrary text), echoes it on every response, refuses a body that is not
``application/json`` (415: a form or ``text/plain`` never reaches a handler), refuses bodies over
``max_body_bytes`` (by ``Content-Length`` at once, and by counting the bytes actually streamed, so
a chunked upload cannot slip past), and turns any exception that escaped the handlers into the 500
body.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.openapi import ErrorBody, ErrorDetail
from api.render import encode
from engine.errors import EngineError, StoreError, StoreUnavailable
from engine.log.ids import new_id

log = logging.getLogger("clipstream.api")

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Engine error code -> HTTP status. Codes not listed are internal (500).
ENGINE_STATUS = {
    "invalid_request": 422,
    "invalid_target": 422,
    "not_found": 404,
    "conflict": 409,
    "insufficient_balance": 402,
    "quota_exceeded": 403,
    "unavailable": 503,
}
# HTTP status -> error code.
HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    402: "insufficient_balance",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    500: "internal",
    503: "unavailable",
}
_GENERIC = {
    500: "internal error",
    503: "the store is unavailable; try again",
}


class PayloadTooLarge(HTTPException):
    """The request body is larger than the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


def request_id_of(request: HTTPConnection) -> str:
    """The id :class:`Edge` gave this request."""
    rid: str = request.scope.get("state", {}).get("request_id") or new_id("req")
    return rid


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The JSON error body of DESIGN §7 (:class:`api.openapi.ErrorBody`)."""
    body = ErrorBody(
        error=ErrorDetail(code=code, message=message, request_id=request_id), erro=message
    )
    return Response(
        encode(body), status_code=status, media_type="application/json", headers=headers
    )


# -- exception handlers (registered on the Starlette app) ----------------------------------------


async def engine_error(request: Request, exc: Exception) -> Response:
    """An engine error, mapped by its code; internal ones say nothing about their cause."""
    assert isinstance(exc, EngineError)
    status = ENGINE_STATUS.get(exc.code, 500)
    if isinstance(exc, StoreUnavailable):
        status = 503
    if status >= 500 or isinstance(exc, StoreError):
        log.error("request %s failed: %r", request_id_of(request), exc)
        status = 503 if status == 503 else 500
        return error_response(status, HTTP_CODES[status], _GENERIC[status], request_id_of(request))
    return error_response(status, exc.code, str(exc), request_id_of(request))


async def redis_error(request: Request, exc: Exception) -> Response:
    """A Redis failure that was not translated at the store boundary."""
    log.error("request %s: Redis failed: %r", request_id_of(request), exc)
    return error_response(503, "unavailable", _GENERIC[503], request_id_of(request))


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's and our own HTTPExceptions (404 routes, 405, 401, 413 …)."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = HTTP_CODES.get(status, "invalid_request" if status < 500 else "internal")
    message = _GENERIC.get(status) or str(exc.detail)
    return error_response(status, code, message, request_id_of(request), exc.headers)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    EngineError: engine_error,
    RedisError: redis_error,
    HTTPException: http_error,
}


# -- the edge middleware -------------------------------------------------------------------------


class Edge:
    """Request ids, the body-size limit and the last-resort 500 (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = headers.get(REQUEST_ID_HEADER, "")
        request_id = given if _REQUEST_ID.match(given) else new_id("req")
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        if scope["method"] in _BODY_METHODS and _has_body(headers) and not _is_json(headers):
            response = error_response(
                415,
                "unsupported_media_type",
                "the request body must be JSON, sent as Content-Type: application/json",
                request_id,
            )
            await response(scope, receive, send_with_id)
            return

        limit = self.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            status = 413 if declared.isdigit() else 400
            message = (
                f"the request body is larger than {limit} bytes"
                if status == 413
                else "Content-Length is not a number"
            )
            response = error_response(status, HTTP_CODES[status], message, request_id)
            await response(scope, receive, send_with_id)
            return

        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit)
            return message

        try:
            await self.app(scope, counted_receive, send_with_id)
        except PayloadTooLarge as exc:  # raised where no handler could map it
            if started:
                raise
            response = error_response(413, "payload_too_large", str(exc.detail), request_id)
            await response(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s failed", request_id)
            if started:
                raise
            response = error_response(500, "internal", _GENERIC[500], request_id)
            await response(scope, receive, send_with_id)


def _has_body(headers: Headers) -> bool:
    """True when the request says it sends a body (a length above 0, or chunks)."""
    declared = headers.get("content-length", "0").strip()
    return "transfer-encoding" in headers or not declared.isdigit() or int(declared) > 0


def _is_json(headers: Headers) -> bool:
    """True when the body is declared JSON: ``application/json`` (any parameters, such as a
    charset) or a ``+json`` type."""
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
