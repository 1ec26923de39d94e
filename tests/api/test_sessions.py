"""Sessions over the admin API (api.sessions): ``DELETE /admin/accounts/{id}/sessions`` ends
every session token of an account issued until then (API keys and other accounts untouched), and
session lifetimes are capped (``CLIPSTREAM_SESSION_MAX_TTL``). The live streams' side is in
tests/integration/test_realtime_sessions.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import pytest

from api.app import create_app
from engine.runtime import Runtime
from tests.api.conftest import ApiAccount

pytestmark = pytest.mark.anyio


async def test_revoking_sessions_refuses_the_old_tokens_and_only_them(
    client: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount, bob: ApiAccount
) -> None:
    assert (await client.get("/v1/me", headers=alice.jwt_auth)).status_code == 200
    url = f"/admin/accounts/{alice.account_id}/sessions"
    assert (await client.delete(url, headers=alice.jwt_auth)).status_code == 401  # not an admin
    revoked = await client.delete(url, headers=admin)
    assert revoked.status_code == 204, revoked.text
    assert (await client.get("/v1/me", headers=alice.jwt_auth)).status_code == 401
    assert (await client.get("/v1/me", headers=alice.key_auth)).status_code == 200
    assert (await client.get("/v1/me", headers=bob.jwt_auth)).status_code == 200
    minted = await client.post(f"/admin/accounts/{alice.account_id}/tokens", headers=admin)
    assert minted.status_code == 201, minted.text
    fresh = {"Authorization": f"Bearer {minted.json()['session_token']}"}
    assert (await client.get("/v1/me", headers=fresh)).status_code == 200
    ghost = "acc_0000000000aaaaaaaaaa"
    missing = await client.delete(f"/admin/accounts/{ghost}/sessions", headers=admin)
    assert missing.status_code == 404


@pytest.fixture
async def capped(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose tokens live at most an hour."""
    same_secrets = replace(
        runtime.settings,
        admin_token=runtime.generated_admin_token,
        jwt_secret=runtime.jwt_keys.current.secret,
        session_max_ttl_s=3_600,
    )
    short = await Runtime.open(same_secrets, runtime.redis)
    transport = httpx.ASGITransport(app=create_app(short))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


async def test_token_lifetimes_are_capped(
    capped: httpx.AsyncClient, admin: dict[str, str], alice: ApiAccount
) -> None:
    # alice's day-long token was minted by an uncapped process: this deployment refuses it.
    assert (await capped.get("/v1/me", headers=alice.jwt_auth)).status_code == 401
    url = f"/admin/accounts/{alice.account_id}/tokens"
    too_long = await capped.post(url, json={"ttl_s": 3_601}, headers=admin)
    assert too_long.status_code == 422, too_long.text
    assert "at most 3600 s" in too_long.json()["error"]["message"]
    default = await capped.post(url, headers=admin)
    assert default.status_code == 201, default.text
    assert default.json()["ttl_s"] == 3_600
    token = {"Authorization": f"Bearer {default.json()['session_token']}"}
    assert (await capped.get("/v1/me", headers=token)).status_code == 200
