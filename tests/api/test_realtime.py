"""The realtime WebSocket on both backends: every refusal closes with 4401 before any message,
a subscriber gets only its own owner's events, a reconnect with the last cursor misses nothing,
pings flow when idle.

The app runs in the test's own event loop through a small ASGI driver (Starlette's TestClient
would run it on another loop than the Redis client the ``runtime`` fixture opened)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import httpx
import jwt
import orjson
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.auth import mint_session_token
from api.cli.redact import TokenRedactingFilter
from api.realtime.endpoints import ORIGINS_ENV, origin_allowed
from engine.runtime import Runtime
from engine.settings import Rate, RateLimits
from projections.projector import Projector
from tests.api.conftest import ApiAccount
from tests.golden import scenarios
from tests.integration.test_projector import make

pytestmark = pytest.mark.anyio

Json = dict[str, Any]


async def next_events(receive: Callable[[], Awaitable[Json]], n: int) -> list[Json]:
    """The next ``n`` event messages ``receive`` gives (pings and the rest skipped)."""
    out: list[Json] = []
    while len(out) < n:
        message = await receive()
        if message["type"] == "event":
            out.append(message)
    return out


class Closed(Exception):
    """The server closed the WebSocket."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}")
        self.code, self.reason = code, reason


class WsClient:
    """One WebSocket connection to an ASGI app, driven in this event loop."""

    def __init__(self) -> None:
        self._to_app_send, self._to_app = anyio.create_memory_object_stream[Json](16)
        self._from_app_send, self._from_app = anyio.create_memory_object_stream[Json](100_000)
        self.accepted = False

    async def receive(self) -> Json:
        """The next JSON message; Closed when the server closes."""
        with anyio.fail_after(20):
            while True:
                try:
                    message = await self._from_app.receive()
                except anyio.EndOfStream:
                    raise Closed(1006, "the app returned without closing") from None
                if message["type"] == "websocket.accept":
                    self.accepted = True
                elif message["type"] == "websocket.close":
                    raise Closed(message.get("code", 1000), message.get("reason") or "")
                elif message["type"] == "websocket.send":
                    decoded: Json = orjson.loads(message.get("text") or message["bytes"])
                    return decoded

    async def take_events(self, n: int) -> list[Json]:
        """The next ``n`` event messages (pings skipped)."""
        return await next_events(self.receive, n)

    async def disconnect(self) -> None:
        await self._to_app_send.send({"type": "websocket.disconnect", "code": 1000})


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[Starlette]:
    """The app with its lifespan (the feed hub) running."""
    async with app.router.lifespan_context(app):
        yield app


@asynccontextmanager
async def ws_connect(
    app: Starlette, path: str, headers: dict[str, str] | None = None
) -> AsyncIterator[WsClient]:
    raw_path, _, query = path.partition("?")
    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": raw_path,
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 5000),
        "server": ("testserver", 80),
        "subprotocols": [],
        "state": {},
    }
    client = WsClient()
    await client._to_app_send.send({"type": "websocket.connect"})

    async def serve() -> None:
        async with client._from_app_send:
            await app(scope, client._to_app.receive, client._from_app_send.send)  # type: ignore[arg-type]

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        try:
            yield client
        finally:
            await client.disconnect()
    for stream in (client._to_app_send, client._to_app, client._from_app):
        stream.close()


async def assert_refused(app: Starlette, path: str, headers: dict[str, str] | None = None) -> None:
    async with ws_connect(app, path, headers) as ws:
        with pytest.raises(Closed) as closed:
            await ws.receive()
    assert closed.value.code == 4401


@pytest.fixture
async def app(runtime: Runtime) -> AsyncIterator[Starlette]:
    async with running(create_app(runtime)) as started:
        yield started


async def run_executions(runtime: Runtime, owner: str, count: int) -> list[tuple[str, int]]:
    """``count`` executions of three steps folded by the projector; their (id, seq) in order."""
    out: list[tuple[str, int]] = []
    for _ in range(count):
        made = await make(runtime.store, owner, scenarios.three_steps)
        out += [(made.execution_id, e.seq) for e in made.events]
    await Projector(runtime).run_until_idle()
    return out


async def test_refusals_close_4401_before_any_message(
    runtime: Runtime, app: Starlette, alice: ApiAccount
) -> None:
    await run_executions(runtime, alice.account_id, 1)  # there is something to leak
    other_secret = "x" * 40
    forged = jwt.encode(
        {"sub": alice.account_id, "iat": 0, "exp": 2**40, "aud": "clipstream", "iss": "clipstream"},
        other_secret,
        algorithm="HS256",
    )
    expired = mint_session_token(runtime, alice.account_id, ttl_s=-3600)  # past the leeway
    for path in (
        "/v1/realtime",
        "/v1/realtime?token=",
        f"/v1/realtime?token={alice.api_key}",
        f"/v1/realtime?token={forged}",
        f"/v1/realtime?token={expired}",
        f"/v1/realtime?token={alice.session_token}x",
    ):
        await assert_refused(app, path)
    good = f"/v1/realtime?token={alice.session_token}"
    for origin in ("https://evil.example", "null", "http://testserver.evil.example"):
        await assert_refused(app, good, {"Origin": origin})


async def test_a_failed_token_check_spends_the_failed_authentication_budget(
    runtime: Runtime, alice: ApiAccount
) -> None:
    """A bad WebSocket token counts like a bad bearer header (api.rate_limits): past the budget,
    even a good token is refused (1008, before the handshake) and so is HTTP from the address."""
    wide = Rate(1_000_000, 60)
    limits = RateLimits(key=wide, ip=wide, auth_failures=Rate(3, 60))
    same_secrets = replace(
        runtime.settings, jwt_secret=runtime.jwt_keys.current.secret, rate_limits=limits
    )
    limited = await Runtime.open(same_secrets, runtime.redis)
    async with running(create_app(limited)) as app:
        for n in range(3):
            await assert_refused(app, f"/v1/realtime?token={alice.session_token}{n}")
        async with ws_connect(app, f"/v1/realtime?token={alice.session_token}") as ws:
            with pytest.raises(Closed) as closed:
                await ws.receive()
        assert (closed.value.code, closed.value.reason) == (1008, "rate_limited")
        assert not ws.accepted
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            answer = await http.get("/v1/me", headers={"Authorization": f"Bearer {alice.api_key}"})
        assert answer.status_code == 429


async def test_allowed_origins_and_clients_without_an_origin_get_the_feed(
    runtime: Runtime, app: Starlette, alice: ApiAccount
) -> None:
    good = f"/v1/realtime?token={alice.session_token}"
    for headers in ({}, {"Origin": "http://testserver"}, {"Origin": "http://localhost:5173"}):
        async with ws_connect(app, good, headers) as ws:
            assert (await ws.receive())["type"] == "reset"


def test_the_origin_allowlist_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.realtime.endpoints import allowed_origins

    monkeypatch.setenv(ORIGINS_ENV, "https://app.example.com, https://ops.example.com/")
    allow = allowed_origins()
    assert origin_allowed("https://app.example.com", "api.example.com", allow)
    assert origin_allowed("https://OPS.example.com", "api.example.com", allow)
    assert not origin_allowed("http://localhost:3000", "api.example.com", allow)
    monkeypatch.delenv(ORIGINS_ENV)
    assert allowed_origins() is None
    assert origin_allowed("https://api.example.com", "api.example.com", None)
    assert origin_allowed("http://127.0.0.1:8000", "api.example.com", None)
    assert not origin_allowed("https://app.example.com", "api.example.com", None)


async def test_a_subscriber_sees_only_its_owners_events_and_resumes_without_a_gap(
    runtime: Runtime, app: Starlette, alice: ApiAccount, bob: ApiAccount
) -> None:
    path = f"/v1/realtime?token={alice.session_token}"
    async with ws_connect(app, path) as ws:
        reset = await ws.receive()
        assert reset == {"type": "reset", "cursor": reset["cursor"], "executions": []}
        await run_executions(runtime, bob.account_id, 3)
        expected = await run_executions(runtime, alice.account_id, 2)
        got = await ws.take_events(9)
    assert [(m["execution_id"], m["seq"]) for m in got] == expected[:9]
    assert got[-1]["execution"]["status"] == "done"
    assert got[0]["event"] == "ExecutionRequested"
    # Disconnected after nine events; the rest and what happens meanwhile arrive on resume.
    expected += await run_executions(runtime, alice.account_id, 1)
    async with ws_connect(app, f"{path}&since={got[-1]['cursor']}") as ws:
        rest = await ws.take_events(len(expected) - 9)
        expected += await run_executions(runtime, alice.account_id, 1)
        rest += await ws.take_events(9)
    assert [(m["execution_id"], m["seq"]) for m in got + rest] == expected


async def test_idle_connections_get_pings(
    runtime: Runtime, app: Starlette, alice: ApiAccount
) -> None:
    app.state.feed_hub.ping_s = 0.05
    async with ws_connect(app, f"/v1/realtime?token={alice.session_token}") as ws:
        assert (await ws.receive())["type"] == "reset"
        assert (await ws.receive()) == {"type": "ping"}


async def test_server_shutdown_closes_with_service_restart(
    runtime: Runtime, alice: ApiAccount
) -> None:
    app = create_app(runtime)
    async with running(app), ws_connect(app, f"/v1/realtime?token={alice.session_token}") as ws:
        assert (await ws.receive())["type"] == "reset"
        # what the hub does to every subscriber when the app stops
        for subs in list(app.state.feed_hub._subscribers.values()):
            for sub in list(subs):
                sub.close("server shutting down")
        with pytest.raises(Closed) as closed:
            await ws.receive()
    assert closed.value.code == 1012


def test_the_access_log_never_shows_the_token() -> None:
    """uvicorn's access-log record, as uvicorn builds it, through the CLI's filter."""
    from uvicorn.logging import AccessFormatter

    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhY2MifQ.c2lnbmF0dXJl"
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/v1/realtime?token={token}&since=1-0", "1.1", 101),
        None,
    )
    ws_record = logging.LogRecord(
        "uvicorn.error",  # where uvicorn logs the WebSocket handshake
        logging.INFO,
        __file__,
        1,
        '%s - "WebSocket %s" [accepted]',
        ("127.0.0.1:5000", f"/v1/realtime?since=1-0&token={token}"),
        None,
    )
    formatter = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s')
    for rec in (record, ws_record):
        assert TokenRedactingFilter().filter(rec)
        line = formatter.format(rec) if rec is record else rec.getMessage()
        assert token not in line
        assert "since=1-0" in line


async def test_the_http_api_still_answers_beside_the_feed(
    runtime: Runtime, app: Starlette, alice: ApiAccount
) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        me = await http.get("/v1/me", headers=alice.jwt_auth)
    assert me.status_code == 200
