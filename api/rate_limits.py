"""Abuse limits (DESIGN §7): requests per credential and per client address, and failed
authentications per client address, shared by every API process.

The counters live in Redis, in the deployment's own client (a server, a cluster or the embedded
store), counted by the ``limits`` library's sliding-window-counter strategy: one script per check,
two keys under one hash tag, no burst of twice the limit at a window's edge. The checks of one
request go in one pipelined round trip (:meth:`Limiter.count`). Three policies, each
off when its setting is (``CLIPSTREAM_RATE_*``, engine.settings):

    ``ip``    every request from one client address (health probes excepted)      2400/minute
    ``auth``  failed authentications from one client address                        30/minute
    ``key``   authenticated requests of one credential: an API key by its hash, a
              session by its account (minting more tokens buys nothing)              1200/minute

Failed authentications are limited harder and by address only, never by the credential they
named (that would let anyone lock a victim's key out). The ``auth`` budget is *tested* on every
request that carries a credential, and the test decides before the credential's lookup does (an
API key's record is read in the same round trip); it is *spent* only on a failure: past it, even
a correct guess answers 429, so guessing stops paying. Every failure answers the same 401 until
then.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.exceptions import NoScriptError, RedisError
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response, request_id_of
from api.sessions import Session, sessions_after_of, sessions_after_read
from engine.connection import RedisClient
from engine.money.accounts import API_KEY_PREFIX, account_of_record, api_key_record, key_hash
from engine.runtime import Runtime
from engine.settings import Rate

log = logging.getLogger("clipstream.api.rate_limits")

# Probes of the orchestrator and the scraper: never limited (they carry no credential either).
EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})
_STATE = "client_address"
_PREFETCHED = "credential_prefetched"


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
        self.retry_after = retry_after
        super().__init__(
            429,
            f"too many requests ({policy.name} limit: {policy.rate}); retry in {retry_after} s",
            headers={
                "Retry-After": str(retry_after),
                "RateLimit": f'"{policy.name}";r=0;t={retry_after}',
                "RateLimit-Policy": policy.header,
            },
        )


@dataclass(frozen=True, slots=True)
class Check:
    """One count of a request: ``identity`` under ``policy``, spending a request (``spend``) or
    only testing that one is left."""

    policy: Policy
    identity: str
    spend: bool = True


@dataclass(frozen=True, slots=True)
class Counted:
    """What one round trip of :meth:`Limiter.count` answered: each check's refusal (None: it
    passed) and the reads' replies, each the RedisError it failed with when it failed."""

    refusals: list[RateLimited | None]
    reads: list[Any]

    @property
    def refused(self) -> RateLimited | None:
        """The refusal that asks to wait longest, or None when every check passed."""
        refused = [r for r in self.refusals if r is not None]
        return max(refused, key=lambda r: r.retry_after) if refused else None


class Limiter:
    """The three policies of one API process, counted in Redis.

    The counting is the library's: its sliding-window-counter scripts, key names and weighting.
    What this class adds is the round trip: every check of a request, and the reads that go with
    them (an API key's record, a session's revocation), go in one pipeline, where awaiting the
    strategy's ``hit`` and ``test`` one by one would take a round trip each (a pipeline costs
    the client one connection checkout and one write for all of them, and it is most of what a
    request costs the API process).
    """

    def __init__(
        self, runtime: Runtime, sessions: Callable[[str], Session | None] | None = None
    ) -> None:
        """``sessions`` verifies a session token (api.auth): given, a request's session is
        counted and its revocation read in the round trip of the address's checks."""
        limits = runtime.settings.rate_limits
        self.runtime = runtime
        self.sessions = sessions
        self._redis = runtime.redis
        self._storage = _DeploymentRedis(runtime.redis, runtime.store.keys.rate_limits)
        self._strategy = SlidingWindowCounterRateLimiter(self._storage)
        self.ip = None if limits.ip is None else Policy("ip", limits.ip)
        self.auth = None if limits.auth_failures is None else Policy("auth", limits.auth_failures)
        self.key = None if limits.key is None else Policy("key", limits.key)

    async def hit(self, policy: Policy | None, identity: str) -> None:
        """Spend one request of ``identity`` under ``policy``: RateLimited when none is left."""
        if policy is not None:
            counted = await self.count([Check(policy, identity)])
            if counted.refused is not None:
                raise counted.refused

    def address_checks(self, address: str, *, with_credential: bool) -> list[Check]:
        """What every request from ``address`` counts: a request of the ``ip`` policy spent and,
        when it carries a credential, the ``auth`` policy tested (failed authentications spend
        it, in api.auth)."""
        checks = [] if self.ip is None else [Check(self.ip, address)]
        if with_credential and self.auth is not None:
            checks.append(Check(self.auth, address, spend=False))
        return checks

    async def admit_address(self, address: str, *, with_credential: bool) -> None:
        """:meth:`address_checks` in one round trip: RateLimited when one refuses (a WebSocket's
        handshake, which has no credential read to share the trip with)."""
        refused = (
            await self.count(self.address_checks(address, with_credential=with_credential))
        ).refused
        if refused is not None:
            raise refused

    async def count(
        self, checks: Sequence[Check], reads: Sequence[tuple[str, ...]] = ()
    ) -> Counted:
        """Run ``checks`` and the raw read commands ``reads`` (e.g. ``("GET", key)``) in one
        pipelined round trip: the first refusal (in the order of ``checks``) and the reads'
        replies. A check Redis failed passes (fail open, logged); a read it failed is its
        RedisError (the caller decides: nothing here fails open on a credential)."""
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args in map(self._script, checks):
            # EVALSHA straight into the pipeline (redis-py's Script would first ask SCRIPT
            # EXISTS on every execute); a NOSCRIPT answer is retried below through the strategy.
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        for read in reads:
            pipe.execute_command(*read)
        try:
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            if checks:
                log.warning("rate limits not counted (Redis failed): %s", exc)
            return Counted([None] * len(checks), [exc] * len(reads))
        refusals: list[RateLimited | None] = []
        for check, reply in zip(checks, replies, strict=False):
            passed = await self._passed(check, reply)
            refusals.append(
                None if passed else RateLimited(check.policy, await self._retry_after(check))
            )
        return Counted(refusals, replies[len(checks) :])

    def _script(self, check: Check) -> tuple[Any, list[str], list[Any]]:
        """The library's script for ``check``, with the keys and arguments its strategy would
        pass (SlidingWindowCounterRateLimiter.hit / .test over RedisStorage)."""
        item = check.policy.item
        key = item.key_for(check.policy.name, check.identity)
        storage = self._storage
        bridge: Any = storage.bridge
        keys = [
            bridge.prefixed_key(storage._previous_window_key(key)),
            bridge.prefixed_key(storage._current_window_key(key)),
        ]
        if check.spend:
            return bridge.lua_acquire_sliding_window, keys, [item.amount, item.get_expiry(), 1]
        return bridge.lua_sliding_window, keys, [item.get_expiry()]

    async def _passed(self, check: Check, reply: Any) -> bool:
        """Whether ``check`` passed, read from its script's ``reply`` as the strategy reads it."""
        try:
            if isinstance(reply, NoScriptError):  # Redis restarted or flushed its scripts
                return await self._one(check)
            if isinstance(reply, Exception):
                raise reply
            if check.spend:
                return bool(reply)
            previous, previous_ttl_ms, current = (int(v or 0) for v in reply[:3])
            item = check.policy.item
            weighted = self._strategy._weighted_count(
                item, previous, max(0.0, float(previous_ttl_ms)) / 1000, current
            )
            return weighted < item.amount
        except (RedisError, StorageError) as exc:
            log.warning("rate limit %s not counted (Redis failed): %s", check.policy.name, exc)
            return True

    async def _one(self, check: Check) -> bool:
        """``check`` through the strategy itself (its own round trip)."""
        policy = check.policy
        if check.spend:
            return await self._strategy.hit(policy.item, policy.name, check.identity)
        return await self._strategy.test(policy.item, policy.name, check.identity)

    async def _retry_after(self, check: Check) -> int:
        """Whole seconds until the window frees a request (at least 1)."""
        policy = check.policy
        try:
            stats = await self._strategy.get_window_stats(policy.item, policy.name, check.identity)
        except (RedisError, StorageError):
            return policy.rate.seconds
        return max(1, min(policy.rate.seconds, math.ceil(stats.reset_time - time.time())))


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


@dataclass(frozen=True, slots=True)
class Prefetched:
    """A credential's count and what was read of it, by :class:`RateLimits` in the round trip of
    the address's checks, for api.auth to use instead of a round trip of its own: an API key's
    account (None: no such key), or a session token's :class:`Session` and its account's
    revocation instant."""

    credential: str
    refused: RateLimited | None
    account_id: str | None
    session: Session | None = None
    revoked_at: int | None = None


def bearer(connection: HTTPConnection) -> str | None:
    """The bearer credential of the request, if it has one."""
    header = connection.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        return None
    return credential.strip()


def prefetched(connection: HTTPConnection, credential: str) -> Prefetched | None:
    """What :class:`RateLimits` read of ``credential`` (None: nothing was read)."""
    found: Prefetched | None = connection.scope.get("state", {}).get(_PREFETCHED)
    return found if found is not None and found.credential == credential else None


class RateLimits:
    """ASGI middleware: the ``ip`` policy for every request and the ``auth`` policy's test for
    every request that carries a credential, before anything else runs (the spending of ``auth``
    happens in api.auth, once the credential is known to be bad).

    An HTTP request with a bearer credential also spends the ``key`` policy's request of it (an
    API key by its hash, a valid session token by its account) and reads what api.auth decides
    with (the key's record; the account's revocation instant) in the same round trip
    (:class:`Prefetched`). So a request the address's limit refuses has still counted against
    its credential.
    """

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        connection = HTTPConnection(scope)
        address = connection.client.host if connection.client else "unknown"
        state = scope.setdefault("state", {})
        state[_STATE] = address
        limiter = self.limiter
        carries = "authorization" in connection.headers or "token" in connection.query_params
        checks = limiter.address_checks(address, with_credential=carries)
        credential = bearer(connection) if carries and scope["type"] == "http" else None
        prefetch = _Prefetch(limiter, credential) if credential is not None else None
        if prefetch is not None:
            checks += prefetch.checks
        counted = await limiter.count(checks, [] if prefetch is None else prefetch.reads)
        refusals = counted.refusals
        if prefetch is not None:
            found = prefetch.found(refusals[len(refusals) - len(prefetch.checks) :], counted.reads)
            del refusals[len(refusals) - len(prefetch.checks) :]
            if found is not None:
                state[_PREFETCHED] = found
        refused = Counted(refusals, []).refused
        if refused is not None:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": "rate_limited"})
                return
            response = error_response(
                429, "rate_limited", str(refused.detail), request_id_of(connection), refused.headers
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class _Prefetch:
    """What :class:`RateLimits` counts and reads of a bearer credential beside the address's
    checks: an API key's ``key`` count (by its hash) and its record; a valid session token's
    ``key`` count (by its account) and the account's revocation instant."""

    def __init__(self, limiter: Limiter, credential: str) -> None:
        self.credential = credential
        self.checks: list[Check] = []
        self.reads: list[tuple[str, ...]] = []
        self.session: Session | None = None
        self.record: tuple[str, str] | None = None
        runtime = limiter.runtime
        if credential.startswith(API_KEY_PREFIX):
            identity = f"key:{key_hash(credential)}"
            self.record = api_key_record(runtime, credential)
            if self.record is not None:
                self.reads.append(("GET", self.record[1]))
        else:
            self.session = limiter.sessions(credential) if limiter.sessions else None
            if self.session is None:
                return  # not a session token api.auth would accept: nothing to count yet
            identity = f"account:{self.session.account_id}"
            self.reads.append(sessions_after_read(runtime, self.session.account_id))
        if limiter.key is not None:
            self.checks.append(Check(limiter.key, identity))

    def found(self, refusals: list[RateLimited | None], reads: list[Any]) -> Prefetched | None:
        """The :class:`Prefetched` of this credential from its checks' refusals and its reads'
        replies; None when a read failed (api.auth reads again, and fails as Redis does)."""
        if not self.checks and not self.reads:
            return None
        refused = refusals[0] if refusals else None
        if any(isinstance(reply, RedisError) for reply in reads):
            return None
        if self.session is not None:
            revoked_at = sessions_after_of(reads[0])
            return Prefetched(
                self.credential, refused, self.session.account_id, self.session, revoked_at
            )
        account_id = None if self.record is None else account_of_record(reads[0], self.record[0])
        return Prefetched(self.credential, refused, account_id)
