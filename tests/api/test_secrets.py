"""Secrets through the API: a rotated JWT secret keeps the previous one's tokens valid for its
grace period only; a token naming an unknown key is refused; the admin token works although the
process keeps only its hash."""

from __future__ import annotations

import time
from dataclasses import replace

import httpx
import jwt
import pytest

from api.app import create_app
from api.auth import mint_session_token
from engine.connection import RedisClient
from engine.credentials import generate
from engine.money import accounts
from engine.runtime import Runtime
from engine.settings import Settings

pytestmark = pytest.mark.anyio

OLD, NEW, ADMIN = generate(), generate(), generate("adm_")


async def _me(runtime: Runtime, token: str) -> int:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        answer = await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    return answer.status_code


async def test_a_rotated_secret_accepts_the_previous_tokens_until_the_grace_ends(
    redis: RedisClient, settings: Settings
) -> None:
    before = await Runtime.open(replace(settings, jwt_secret=OLD, admin_token=ADMIN), redis)
    account, _ = await accounts.create_account(before, name="r", coins_micro=1_000_000)
    old_token = mint_session_token(before, account.account_id)
    now = int(time.time())

    during = replace(settings, jwt_secret=NEW, jwt_previous_secret=OLD, admin_token=ADMIN)
    rotated = await Runtime.open(replace(during, jwt_previous_until=now + 3_600), redis)
    assert await _me(rotated, old_token) == 200
    new_token = mint_session_token(rotated, account.account_id)
    assert jwt.get_unverified_header(new_token)["kid"] == rotated.jwt_keys.current.kid
    assert await _me(rotated, new_token) == 200
    assert await _me(before, new_token) == 401  # the old deployment never knew the new key

    after = await Runtime.open(replace(during, jwt_previous_until=now - 1), redis)
    assert await _me(after, old_token) == 401
    assert await _me(after, new_token) == 200
    dropped = await Runtime.open(replace(settings, jwt_secret=NEW, admin_token=ADMIN), redis)
    assert await _me(dropped, old_token) == 401


async def test_a_token_naming_an_unknown_key_is_refused_even_when_its_signature_holds(
    runtime: Runtime,
) -> None:
    account, _ = await accounts.create_account(runtime, name="k", coins_micro=0)
    claims = {"sub": account.account_id, "iat": int(time.time()), "exp": int(time.time()) + 60,
              "aud": "clipstream", "iss": "clipstream"}  # fmt: skip
    secret = runtime.jwt_keys.current.secret
    good = jwt.encode(claims, secret, "HS256", headers={"kid": runtime.jwt_keys.current.kid})
    assert await _me(runtime, good) == 200
    unknown = jwt.encode(claims, secret, "HS256", headers={"kid": "0000000000000000"})
    assert await _me(runtime, unknown) == 401


async def test_the_admin_token_opens_admin_routes_though_only_its_hash_is_kept(
    redis: RedisClient, settings: Settings
) -> None:
    runtime = await Runtime.open(replace(settings, jwt_secret=NEW, admin_token=ADMIN), redis)
    assert runtime.generated_admin_token is None
    assert ADMIN not in repr(runtime.secrets)
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        body = {"name": "a", "coins": 1}
        ok = await http.post(
            "/admin/accounts", json=body, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert ok.status_code == 201
        wrong = await http.post(
            "/admin/accounts", json=body, headers={"Authorization": f"Bearer {ADMIN[:-1]}"}
        )
        assert wrong.status_code == 401
    # Nothing secret is written to Redis.
    for key in await redis.keys("*"):
        value = await redis.type(key)
        if value == b"string":
            assert ADMIN.encode() not in (await redis.get(key) or b"")
        elif value == b"hash":
            assert ADMIN.encode() not in b"".join((await redis.hgetall(key)).values())
