"""API fixtures: the app over the two-backend ``runtime`` fixture, an httpx client speaking ASGI
to it, and funded accounts created through the admin route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from api.app import create_app
from engine.runtime import Runtime
from engine.settings import Settings

BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class ApiAccount:
    """An account created through ``POST /admin/accounts``."""

    account_id: str
    api_key: str
    session_token: str

    @property
    def key_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    @property
    def jwt_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.session_token}"}


def http_scope(path: str, headers: dict[str, str]) -> dict[str, Any]:
    """The ASGI scope of ``GET path``, for tests that talk to the app below httpx (to watch each
    message it sends, or to hang up on it)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "state": {},
    }


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings with a small body limit, so 413 tests send little data."""
    return replace(settings, max_body_bytes=BODY_LIMIT)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
def admin(runtime: Runtime) -> dict[str, str]:
    return {"Authorization": f"Bearer {runtime.generated_admin_token}"}


async def new_account(
    client: httpx.AsyncClient, admin: dict[str, str], coins: float = 1.0, name: str = "t"
) -> ApiAccount:
    """Create an account through the admin API."""
    created = await client.post(
        "/admin/accounts", json={"name": name, "coins": coins}, headers=admin
    )
    assert created.status_code == 201, created.text
    body = created.json()
    return ApiAccount(body["account"]["account_id"], body["api_key"], body["session_token"])


@pytest.fixture
async def alice(client: httpx.AsyncClient, admin: dict[str, str]) -> ApiAccount:
    return await new_account(client, admin, name="alice")


@pytest.fixture
async def bob(client: httpx.AsyncClient, admin: dict[str, str]) -> ApiAccount:
    return await new_account(client, admin, name="bob")
