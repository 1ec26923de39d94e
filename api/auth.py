"""Who is calling: API keys, session JWTs and the admin token.

``Authorization: Bearer ck_live_…`` is an API key (looked up by its sha256 in O(1), see
engine.money.accounts); any other bearer credential is a session JWT: HS256 only (the algorithm is
pinned, so ``alg: none`` or an RS/HS confusion is refused), signed with the current JWT secret and
naming it by ``kid`` (a token of the previous secret verifies during its grace period, an unknown
``kid`` never: engine.credentials), with ``sub`` (the account), ``iat``, ``exp``, ``aud`` and
``iss`` all required and a small leeway for clock skew; a lifetime past
``CLIPSTREAM_SESSION_MAX_TTL`` is refused, and so is a token issued before its account's sessions
were revoked (api.sessions). Every 401 carries the same message
whatever the reason, so a probe learns nothing.

Admin routes take ``Authorization: Bearer <admin token>``, whose sha256 is compared in constant
time with the configured token's (the process keeps only that hash).

Every failed authentication counts against the client address's failed-authentication limit, and
every authenticated request against its credential's limit (api.rate_limits): 429 past either.

Each account route declares its :data:`Access` class: ``free`` (never charged: ``GET /v1/me``),
``read``, ``own`` (a read the owner may always make: charged when the balance covers it, free
when it does not — ``/v1/me/ledger``, the owner's execution and its events, DESIGN §6) or
``write``. It is recorded on the endpoint (``endpoint.access``), and a read is admitted and
charged by this one wrapper (api.read_charging) rather than by every handler.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import jwt
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from api.rate_limits import (
    Check,
    Prefetched,
    client_address,
    limiter_of,
    prefetched,
)
from api.rate_limits import bearer as bearer  # where api.realtime.endpoints takes it from
from api.read_charging import admit_read
from api.sessions import Session, issued_ms, sessions_after_of, sessions_after_read
from engine import clock
from engine.errors import InvalidRequest
from engine.log.ids import is_id
from engine.money.accounts import API_KEY_PREFIX, account_for_api_key, key_hash
from engine.runtime import Runtime

AUDIENCE = "clipstream"
ISSUER = "clipstream"
SESSION_TTL_S = 86_400
LEEWAY_S = 30
UNAUTHORIZED = "missing or invalid credentials"

Access = Literal["free", "read", "own", "write"]
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


def session_ttl(runtime: Runtime, ttl_s: int | None) -> int:
    """The lifetime a token asked for with ``ttl_s`` gets: the default (a day, or the cap when
    that is shorter) for None; InvalidRequest past the cap (``CLIPSTREAM_SESSION_MAX_TTL``)."""
    cap = runtime.settings.session_max_ttl_s
    if ttl_s is None:
        return min(SESSION_TTL_S, cap)
    if ttl_s > cap:
        raise InvalidRequest(f"ttl_s: a session token lives at most {cap} s")
    return ttl_s


def mint_session_token(runtime: Runtime, account_id: str, ttl_s: int | None = None) -> str:
    """A session JWT for ``account_id`` valid for ``ttl_s`` seconds (:func:`session_ttl`),
    signed with the current secret and naming it by ``kid``."""
    ttl_s = session_ttl(runtime, ttl_s)
    now_ms = clock.now_ms()
    now = now_ms // 1000
    claims = {
        "sub": account_id,
        "iat": now,
        "iat_ms": now_ms,  # what a revocation of the account's sessions is compared with
        "exp": now + ttl_s,
        "aud": AUDIENCE,
        "iss": ISSUER,
    }
    key = runtime.jwt_keys.current
    return jwt.encode(claims, key.secret, algorithm="HS256", headers={"kid": key.kid})


def verify_session(runtime: Runtime, token: str) -> Session | None:
    """The :class:`Session` of a valid session JWT, or None (bad signature, expired, wrong
    claims, a lifetime past the cap, a key id that is not the current secret's nor, in its grace
    period, the previous one's …). Revocation is not checked here (it needs Redis:
    :func:`authenticate`, api.realtime.endpoints)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
        secret = runtime.jwt_keys.verifying(
            kid if isinstance(kid, str) else None, clock.now_ms() // 1000
        )
        if secret is None or (kid is not None and not isinstance(kid, str)):
            return None
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            leeway=LEEWAY_S,
            options={"require": ["sub", "iat", "exp", "aud", "iss"]},
        )
        sub = claims.get("sub")
        iat, exp = float(claims["iat"]), float(claims["exp"])
        if not (isinstance(sub, str) and is_id(sub, "acc")):
            return None
        if exp - iat > runtime.settings.session_max_ttl_s:
            return None  # minted for longer than this deployment allows
        return Session(sub, issued_ms(claims), int(exp * 1000))
    except (jwt.PyJWTError, TypeError, ValueError, OverflowError):
        return None


def verify_session_token(runtime: Runtime, token: str) -> str | None:
    """The account id of a valid session JWT (:func:`verify_session`), or None."""
    session = verify_session(runtime, token)
    return None if session is None else session.account_id


async def authenticate(runtime: Runtime, request: Request) -> Caller:
    """The calling account; the one 401 when there is none (spending one of the address's failed
    authentications), 429 past the credential's limit (api.rate_limits).

    The credential's count and what is read of it come from api.rate_limits, read with the
    address's checks in one round trip; they are counted and read here when they were not (its
    read failed, or no middleware ran)."""
    limiter = limiter_of(request)
    credential = bearer(request)
    if credential is None:
        raise await _failed(request)
    found = prefetched(request, credential)
    if credential.startswith(API_KEY_PREFIX):
        if found is None:
            counted = await limiter.count(
                [] if limiter.key is None else [Check(limiter.key, f"key:{key_hash(credential)}")]
            )
            account_id = await account_for_api_key(runtime, credential)
            found = Prefetched(credential, counted.refused, account_id)
        if found.account_id is None:
            raise await _failed(request)
        if found.refused is not None:
            raise found.refused
        return Caller(found.account_id, "api_key")
    if found is not None and found.session is not None:
        session, refused, revoked_at = found.session, found.refused, found.revoked_at
    else:
        verified = verify_session(runtime, credential)
        if verified is None:
            raise await _failed(request)
        session = verified
        account = session.account_id
        checks = [] if limiter.key is None else [Check(limiter.key, f"account:{account}")]
        counted = await limiter.count(checks, [sessions_after_read(runtime, account)])
        refused, revoked_at = counted.refused, sessions_after_of(counted.reads[0])
    # A revoked session is a failed authentication like any other (the same 401).
    if session.revoked_by(revoked_at):
        raise await _failed(request)
    if refused is not None:
        raise refused
    return Caller(session.account_id, "session")


async def _failed(request: Request) -> HTTPException:
    """The 401 of a failed authentication, spent from the address's ``auth`` budget (429 instead
    once the budget is spent)."""
    limiter = limiter_of(request)
    await limiter.hit(limiter.auth, client_address(request))
    return unauthorized()


async def require_admin(runtime: Runtime, request: Request) -> None:
    """401 unless the request carries the admin token (a failure spends one of the address's
    failed authentications)."""
    if not runtime.admin_token.check(bearer(request) or ""):
        raise await _failed(request)


def runtime_of(request: Request) -> Runtime:
    """The Runtime the app was created with."""
    runtime: Runtime = request.app.state.runtime
    return runtime


def account_route(access: Access) -> Callable[[AccountHandler], Endpoint]:
    """Wrap a handler that needs an account: it receives the authenticated :class:`Caller`.

    A ``read`` is admitted first: 402 when the balance does not cover its fee, else the fee is
    taken and kept once the answer has gone out (api.read_charging); an ``own`` read the balance
    cannot cover is served free.
    """

    def wrap(handler: AccountHandler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            caller = await authenticate(runtime_of(request), request)
            if access in ("read", "own"):
                await admit_read(request, caller.account_id, lenient=access == "own")
            return await handler(request, caller)

        endpoint.access = access  # type: ignore[attr-defined]
        return endpoint

    return wrap


def admin_route(handler: Endpoint) -> Endpoint:
    """Wrap an operator handler: the admin token is required."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        await require_admin(runtime_of(request), request)
        return await handler(request)

    endpoint.admin = True  # type: ignore[attr-defined]  # read by api.openapi (security)
    return endpoint
