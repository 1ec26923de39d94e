"""Abuse limits (api.rate_limits): per credential, per client address, and failed
authentications per address (limited harder), counted in Redis so every API process shares them;
a refusal is 429 with Retry-After and the RateLimit headers."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import httpx
import pytest
from redis.asyncio import Redis

from api.app import create_app
from api.rate_limits import Check, Limiter, Policy
from engine.connection import RedisClient
from engine.money import accounts
from engine.runtime import Runtime
from engine.settings import Rate, RateLimits, Settings
from tests.servers import free_port

pytestmark = pytest.mark.anyio

WIDE = Rate(1_000_000, 60)


@asynccontextmanager
async def api(runtime: Runtime, address: str = "203.0.113.7") -> AsyncIterator[httpx.AsyncClient]:
    """A client of a fresh app (another API process, as far as the limits know) at ``address``."""
    transport = httpx.ASGITransport(app=create_app(runtime), client=(address, 40_000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def _runtime(redis: RedisClient, settings: Settings, **limits: Rate | None) -> Runtime:
    wide = RateLimits(key=WIDE, ip=WIDE, auth_failures=WIDE)
    return await Runtime.open(replace(settings, rate_limits=replace(wide, **limits)), redis)


async def _key_limit(redis: RedisClient, settings: Settings, rate: Rate) -> tuple[Limiter, Policy]:
    """A limiter whose per-credential limit is ``rate``, and that policy."""
    limiter = Limiter(await _runtime(redis, settings, key=rate))
    assert limiter.key is not None
    return limiter, limiter.key


def _refused(response: httpx.Response, policy: str, quota: int, window: int) -> int:
    """Check a 429 says which policy, when to come back and the policy itself; its Retry-After."""
    assert response.status_code == 429, response.text
    assert response.json()["error"]["code"] == "rate_limited"
    retry_after = int(response.headers["retry-after"])
    assert 1 <= retry_after <= window
    assert response.headers["ratelimit"] == f'"{policy}";r=0;t={retry_after}'
    assert response.headers["ratelimit-policy"] == f'"{policy}";q={quota};w={window}'
    return retry_after


async def test_each_credential_has_its_own_budget_shared_by_every_api_process(
    redis: RedisClient, settings: Settings
) -> None:
    runtime = await _runtime(redis, settings, key=Rate(5, 60))
    account, first_key = await accounts.create_account(runtime, name="k", coins_micro=10**6)
    second_key = await accounts.issue_api_key(runtime, account.account_id)
    first = {"Authorization": f"Bearer {first_key}"}
    async with api(runtime) as one, api(runtime) as two:
        for http in (one, two, one, two, one):
            assert (await http.get("/v1/me", headers=first)).status_code == 200
        _refused(await two.get("/v1/me", headers=first), "key", 5, 60)
        _refused(await one.get("/v1/items", headers=first), "key", 5, 60)
        # Another key of the same account counts on its own.
        second = {"Authorization": f"Bearer {second_key}"}
        assert (await one.get("/v1/me", headers=second)).status_code == 200
    # A refused read is not charged: only the one read that was served paid.
    assert await accounts.balance(runtime, account.account_id) == 10**6


async def test_sessions_count_by_account_however_many_tokens_are_minted(
    redis: RedisClient, settings: Settings
) -> None:
    from api.auth import mint_session_token

    runtime = await _runtime(redis, settings, key=Rate(3, 60))
    account, _ = await accounts.create_account(runtime, name="s", coins_micro=0)
    async with api(runtime) as http:
        for n in range(4):
            token = mint_session_token(runtime, account.account_id, ttl_s=60 + n)
            answer = await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            if n < 3:
                assert answer.status_code == 200
            else:
                _refused(answer, "key", 3, 60)


async def test_each_client_address_has_a_budget_and_probes_are_never_limited(
    redis: RedisClient, settings: Settings
) -> None:
    runtime = await _runtime(redis, settings, ip=Rate(4, 60))
    async with api(runtime, "198.51.100.1") as here, api(runtime, "198.51.100.2") as there:
        for _ in range(4):
            assert (await here.get("/v1/tools")).status_code == 401  # any request counts
        _refused(await here.get("/openapi.json"), "ip", 4, 60)
        assert (await here.get("/healthz")).status_code == 200
        assert (await there.get("/openapi.json")).status_code == 200


async def test_failed_authentications_are_limited_harder_and_then_even_a_good_key_waits(
    redis: RedisClient, settings: Settings
) -> None:
    runtime = await _runtime(redis, settings, auth_failures=Rate(3, 60))
    _, key = await accounts.create_account(runtime, name="v", coins_micro=10**6)
    good = {"Authorization": f"Bearer {key}"}
    async with api(runtime, "192.0.2.66") as attacker, api(runtime, "192.0.2.10") as victim:
        for n in range(3):
            guess = {"Authorization": f"Bearer ck_live_{'x' * 40}{n}"}
            answer = await attacker.get("/v1/me", headers=guess)
            assert answer.status_code == 401  # the same 401 every time until the budget is spent
        _refused(await attacker.get("/v1/me", headers=good), "auth", 3, 60)  # a right guess too
        _refused(await attacker.post("/admin/accounts", json={}, headers=good), "auth", 3, 60)
        # Public pages still answer the address, and the key's owner elsewhere is not locked out.
        assert (await attacker.get("/openapi.json")).status_code == 200
        assert (await victim.get("/v1/me", headers=good)).status_code == 200
        # A wrong admin token spends the same budget.
        for _ in range(3):
            wrong = {"Authorization": "Bearer adm_wrong"}
            assert (await victim.post("/admin/accounts", json={}, headers=wrong)).status_code == 401
        _refused(await victim.get("/v1/me", headers=good), "auth", 3, 60)


async def test_a_limit_that_is_off_never_refuses(redis: RedisClient, settings: Settings) -> None:
    runtime = await _runtime(redis, settings, ip=None, key=None, auth_failures=None)
    async with api(runtime) as http:
        for _ in range(30):
            assert (await http.get("/v1/me")).status_code == 401


async def test_when_redis_fails_to_count_the_request_goes_on(
    redis: RedisClient, settings: Settings
) -> None:
    runtime = await _runtime(redis, settings, ip=Rate(1, 60))
    app = create_app(runtime)
    # The limiter counts through a Redis that is not there (nothing listens on the port).
    app.state.limiter._redis = Redis(host="127.0.0.1", port=free_port(), socket_timeout=1)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        for _ in range(3):
            assert (await http.get("/openapi.json")).status_code == 200


async def test_the_counters_live_under_the_deployment_prefix(
    redis: RedisClient, settings: Settings
) -> None:
    runtime = await _runtime(redis, settings, ip=Rate(9, 60))
    async with api(runtime) as http:
        await http.get("/openapi.json")
    names = [k.decode() for k in await redis.keys(f"{runtime.store.keys.rate_limits}:*")]
    assert names
    assert all(
        re.fullmatch(r"cs:rl:\{LIMITER/ip/203\.0\.113\.7/9/60/second\}(/-1)?", n) for n in names
    )


async def test_a_websocket_past_the_address_limit_is_closed_before_its_handshake(
    redis: RedisClient, settings: Settings
) -> None:
    runtime = await _runtime(redis, settings, ip=Rate(2, 60))
    app = create_app(runtime)
    async with api(runtime, "198.51.100.9") as http:  # spend the address's budget over HTTP
        for _ in range(2):
            await http.get("/openapi.json")
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/v1/realtime",
        "raw_path": b"/v1/realtime",
        "query_string": b"token=x",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("198.51.100.9", 5000),
        "server": ("testserver", 80),
        "subprotocols": [],
        "state": {},
    }
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1008, "reason": "rate_limited"}]


async def test_checks_in_one_round_trip_count_exactly_as_the_library_does(
    redis: RedisClient, settings: Settings
) -> None:
    limiter, policy = await _key_limit(redis, settings, Rate(5, 60))
    strategy = limiter._strategy  # the library's own strategy over the same counters
    for _ in range(3):
        assert (await limiter.count([Check(policy, "a")])).refused is None
    assert (await strategy.get_window_stats(policy.item, "key", "a")).remaining == 2
    # A test spends nothing; reads ride along.
    await redis.set("cs:probe", "here")
    counted = await limiter.count([Check(policy, "a", spend=False)], [("GET", "cs:probe")])
    assert counted.refused is None
    assert counted.reads == [b"here"]
    assert (await strategy.get_window_stats(policy.item, "key", "a")).remaining == 2
    assert await strategy.hit(policy.item, "key", "a")
    assert await strategy.hit(policy.item, "key", "a")
    assert not await strategy.test(policy.item, "key", "a")
    counted = await limiter.count([Check(policy, "b"), Check(policy, "a", spend=False)])
    assert counted.refusals[0] is None
    refused = counted.refused
    assert refused is not None
    assert refused is counted.refusals[1]
    assert 1 <= refused.retry_after <= 60
    assert (await limiter.count([Check(policy, "a")])).refused is not None
    assert (await strategy.get_window_stats(policy.item, "key", "b")).remaining == 4


async def test_a_script_redis_forgot_is_counted_through_the_library(
    redis: RedisClient, settings: Settings
) -> None:
    limiter, policy = await _key_limit(redis, settings, Rate(2, 60))
    await redis.script_flush()
    assert (await limiter.count([Check(policy, "a")])).refused is None
    assert (await limiter.count([Check(policy, "a")])).refused is None
    assert (await limiter.count([Check(policy, "a")])).refused is not None
