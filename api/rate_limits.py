"""Abuse limits (DESIGN §7): requests per credential and per client address, and failed
authentications per client address, shared by every API process.

The counters live in Redis, in the deployment's own client (a server, a cluster or the embedded
store), counted by the ``limits`` library's sliding-window-counter strategy: one script per check,
two keys under one hash tag, no burst of twice the limit at a window's edge. Three policies, each
off when its setting is (``CLIPSTREAM_RATE_*``, engine.settings):

    ``ip``    every request from one client address (health probes excepted)      2400/minute
    ``auth``  failed authentications from one client address                        30/minute
    ``key``   authenticated requests of one credential: an API key by its hash, a
              session by its account (minting more tokens buys nothing)              1200/minute

Failed authentications are limited harder and by address only, never by the credential they
named (that would let anyone lock a victim's key out). The ``auth`` budget is *tested* before the
credential is looked up and *spent* only on a failure: past it, even a correct guess answers 429,
so guessing stops paying. Every failure answers the same 401 until then.

A refusal is ``429 rate_limited`` with ``Retry-After`` (whole seconds), and ``RateLimit`` /
``RateLimit-Policy`` (the IETF draft's structured fields: ``"ip";r=0;t=12`` and
``"ip";q=2400;w=60``). A WebSocket refused before its handshake is closed with 1008.

If Redis fails while counting, the request goes on (fail open, logged): an outage of the limiter
must not become an outage of the API, and whatever the request does next meets Redis anyway.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response, request_id_of
from engine.connection import RedisClient
from engine.runtime import Runtime
from engine.settings import Rate

log = logging.getLogger("clipstream.api.rate_limits")

# Probes of the orchestrator and the scraper: never limited (they carry no credential either).
EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
_STATE = "client_address"


class _DeploymentRedis(RedisStorage):
    """The ``limits`` Redis storage over the client the deployment already has (its pool, its
    cluster topology, its credentials; the embedded store too), instead of a second connection
    built from a URL."""

    def __init__(self, client: RedisClient, key_prefix: str) -> None:
        self._client = client
        super().__init__("async+redis://", implementation="redispy", key_prefix=key_prefix)

    def configure_bridge(self) -> None:
        bridge: Any = self.bridge
        bridge.storage = self._client
        bridge.connection_getter = lambda _readonly: self._client


@dataclass(frozen=True, slots=True)
class Policy:
    """One limit, its name in the headers and its rate."""

    name: str
    rate: Rate

    @property
    def item(self) -> RateLimitItemPerSecond:
        return RateLimitItemPerSecond(self.rate.amount, self.rate.seconds)

    @property
    def header(self) -> str:
        """``RateLimit-Policy`` of this policy: quota and window in seconds."""
        return f'"{self.name}";q={self.rate.amount};w={self.rate.seconds}'


class RateLimited(HTTPException):
    """429 with the headers that say when to come back."""

    def __init__(self, policy: Policy, retry_after: int) -> None:
        super().__init__(
            429,
            f"too many requests ({policy.name} limit: {policy.rate}); retry in {retry_after} s",
            headers={
                "Retry-After": str(retry_after),
                "RateLimit": f'"{policy.name}";r=0;t={retry_after}',
                "RateLimit-Policy": policy.header,
            },
        )


class Limiter:
    """The three policies of one API process, counted in Redis."""

    def __init__(self, runtime: Runtime) -> None:
        limits = runtime.settings.rate_limits
        storage = _DeploymentRedis(runtime.redis, runtime.store.keys.rate_limits)
        self._strategy = SlidingWindowCounterRateLimiter(storage)
        self.ip = None if limits.ip is None else Policy("ip", limits.ip)
        self.auth = None if limits.auth_failures is None else Policy("auth", limits.auth_failures)
        self.key = None if limits.key is None else Policy("key", limits.key)

    async def hit(self, policy: Policy | None, identity: str) -> None:
        """Spend one request of ``identity`` under ``policy``: RateLimited when none is left."""
        if policy is not None and not await self._count(policy, identity, spend=True):
            raise RateLimited(policy, await self._retry_after(policy, identity))

    async def check(self, policy: Policy | None, identity: str) -> None:
        """RateLimited when ``identity`` has nothing left under ``policy``; spends nothing."""
        if policy is not None and not await self._count(policy, identity, spend=False):
            raise RateLimited(policy, await self._retry_after(policy, identity))

    async def admit_address(self, address: str, *, with_credential: bool) -> None:
        """A request from ``address`` (RateLimited past the ``ip`` policy, or past the ``auth``
        policy when it carries a credential): both checks in one round trip's time."""
        refusals: list[RateLimited] = []

        async def guarded(check: Any, policy: Policy | None) -> None:
            try:
                await check(policy, address)
            except RateLimited as refused:
                refusals.append(refused)

        async with anyio.create_task_group() as tg:
            tg.start_soon(guarded, self.hit, self.ip)
            if with_credential:
                tg.start_soon(guarded, self.check, self.auth)
        if refusals:
            raise max(refusals, key=lambda r: int((r.headers or {})["Retry-After"]))

    async def _count(self, policy: Policy, identity: str, *, spend: bool) -> bool:
        try:
            if spend:
                return await self._strategy.hit(policy.item, policy.name, identity)
            return await self._strategy.test(policy.item, policy.name, identity)
        except (RedisError, StorageError) as exc:
            log.warning("rate limit %s not counted (Redis failed): %s", policy.name, exc)
            return True

    async def _retry_after(self, policy: Policy, identity: str) -> int:
        """Whole seconds until the window frees a request (at least 1)."""
        try:
            stats = await self._strategy.get_window_stats(policy.item, policy.name, identity)
        except (RedisError, StorageError):
            return policy.rate.seconds
        return max(1, min(policy.rate.seconds, math.ceil(stats.reset_time - time.time())))


A = TypeVar("A")
B = TypeVar("B")


async def together(first: Awaitable[A], second: Awaitable[B]) -> tuple[A | RateLimited, B]:
    """Await both at once: ``first``'s result (or the RateLimited it raised), ``second``'s. Any
    other exception of either is raised as itself once both are done."""
    results: list[Any] = [None, None]
    errors: list[BaseException] = []

    async def run(index: int, awaitable: Awaitable[Any]) -> None:
        try:
            results[index] = await awaitable
        except RateLimited as refused:
            if index:
                errors.append(refused)
            results[index] = refused
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, 0, first)
        tg.start_soon(run, 1, second)
    if errors:
        raise errors[0]
    return results[0], results[1]


def client_address(connection: HTTPConnection) -> str:
    """The address the ``ip`` and ``auth`` policies count: the TCP peer, or what a trusted proxy
    said it was (uvicorn's proxy headers, CLIPSTREAM_FORWARDED_ALLOW_IPS)."""
    address: str = connection.scope.get("state", {}).get(_STATE) or (
        connection.client.host if connection.client else "unknown"
    )
    return address


def limiter_of(connection: HTTPConnection) -> Limiter:
    """The app's :class:`Limiter`."""
    limiter: Limiter = connection.app.state.limiter
    return limiter


class RateLimits:
    """ASGI middleware: the ``ip`` policy for every request and the ``auth`` policy's test for
    every request that carries a credential, before anything else runs (the ``key`` policy and
    the spending of ``auth`` happen in api.auth, once the credential is known)."""

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        address = connection.client.host if connection.client else "unknown"
        scope.setdefault("state", {})[_STATE] = address
        carries = "authorization" in connection.headers or "token" in connection.query_params
        try:
            await self.limiter.admit_address(address, with_credential=carries)
        except RateLimited as refused:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "rate_limited"})
                return
            response = error_response(
                429, "rate_limited", str(refused.detail), request_id_of(connection), refused.headers
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
