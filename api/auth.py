"""Who is calling: API keys, session JWTs and the admin token.

``Authorization: Bearer ck_live_…`` is an API key (looked up by its sha256 in O(1), see
engine.money.accounts); any other bearer credential is a session JWT: HS256 only (the algorithm is
pinned, so ``alg: none`` or an RS/HS confusion is refused), signed with ``runtime.jwt_secret``,
with ``sub`` (the account), ``iat``, ``exp``, ``aud`` and ``iss`` all required and a small leeway
for clock skew. Every 401 carries the same message whatever the reason, so a probe learns nothing.

Admin routes take ``Authorization: Bearer <admin token>``, compared in constant time.

Each account route declares its :data:`Access` class: ``free`` (never charged: ``GET /v1/me``),
``read`` or ``write``. It is recorded on the endpoint (``endpoint.access``), and a ``read`` is
admitted and charged by this one wrapper (api.read_charging) rather than by every handler.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import jwt
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.read_charging import admit_read
from engine import clock
from engine.log.ids import is_id
from engine.money.accounts import API_KEY_PREFIX, account_for_api_key
from engine.runtime import Runtime

AUDIENCE = "clipstream"
ISSUER = "clipstream"
SESSION_TTL_S = 86_400
LEEWAY_S = 30
UNAUTHORIZED = "missing or invalid credentials"

Access = Literal["free", "read", "write"]
Via = Literal["api_key", "session"]


@dataclass(frozen=True, slots=True)
class Caller:
    """The authenticated account and how it proved it."""

    account_id: str
    via: Via


AccountHandler = Callable[[Request, Caller], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def unauthorized() -> HTTPException:
    """The one 401 every authentication failure raises."""
    return HTTPException(401, UNAUTHORIZED, headers={"WWW-Authenticate": "Bearer"})


def mint_session_token(runtime: Runtime, account_id: str, ttl_s: int = SESSION_TTL_S) -> str:
    """A session JWT for ``account_id`` valid for ``ttl_s`` seconds."""
    now = clock.now_ms() // 1000
    claims = {
        "sub": account_id,
        "iat": now,
        "exp": now + ttl_s,
        "aud": AUDIENCE,
        "iss": ISSUER,
    }
    return jwt.encode(claims, runtime.jwt_secret, algorithm="HS256")


def verify_session_token(runtime: Runtime, token: str) -> str | None:
    """The account id of a valid session JWT, or None (bad signature, expired, wrong claims …)."""
    try:
        claims = jwt.decode(
            token,
            runtime.jwt_secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_S,
            options={"require": ["sub", "iat", "exp", "aud", "iss"]},
        )
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) and is_id(sub, "acc") else None


def bearer(request: Request) -> str | None:
    """The bearer credential of the request, if it has one."""
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


async def authenticate(runtime: Runtime, request: Request) -> Caller:
    """The calling account; the one 401 when there is none."""
    credential = bearer(request)
    if credential is None:
        raise unauthorized()
    if credential.startswith(API_KEY_PREFIX):
        account_id = await account_for_api_key(runtime, credential)
        if account_id is None:
            raise unauthorized()
        return Caller(account_id, "api_key")
    account_id = verify_session_token(runtime, credential)
    if account_id is None:
        raise unauthorized()
    return Caller(account_id, "session")


def require_admin(runtime: Runtime, request: Request) -> None:
    """401 unless the request carries the admin token."""
    credential = bearer(request) or ""
    if not hmac.compare_digest(credential.encode(), runtime.admin_token.encode()):
        raise unauthorized()


def runtime_of(request: Request) -> Runtime:
    """The Runtime the app was created with."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def account_route(access: Access) -> Callable[[AccountHandler], Endpoint]:
    """Wrap a handler that needs an account: it receives the authenticated :class:`Caller`.

    A ``read`` is admitted first: 402 when the balance is not positive, else its fee is charged
    once the answer has gone out (api.read_charging).
    """

    def wrap(handler: AccountHandler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            caller = await authenticate(runtime_of(request), request)
            if access == "read":
                await admit_read(request, caller.account_id)
            return await handler(request, caller)

        endpoint.access = access  # type: ignore[attr-defined]
        return endpoint

    return wrap


def admin_route(handler: Endpoint) -> Endpoint:
    """Wrap an operator handler: the admin token is required."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        require_admin(runtime_of(request), request)
        return await handler(request)

    endpoint.admin = True  # type: ignore[attr-defined]  # read by api.openapi (security)
    return endpoint
