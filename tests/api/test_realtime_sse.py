"""The feed as Server-Sent Events on both backends: API keys work, ``id:`` is the cursor and
``Last-Event-ID`` resumes with no gap; any ``Accept`` that admits the stream gets it (DESIGN §8:
``*/*`` as curl and httpx send, ``text/*``, none) and one that excludes it gets a 406 in the error
envelope."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import orjson
import pytest
from starlette.applications import Starlette

from api.app import create_app
from api.realtime.endpoints import accepts_event_stream
from engine.runtime import Runtime
from tests.api.conftest import ApiAccount, http_scope
from tests.api.test_realtime import run_executions, running

pytestmark = pytest.mark.anyio


async def sse_events(app: Starlette, headers: dict[str, str], n: int) -> list[dict[str, Any]]:
    """The first ``n`` SSE messages of ``GET /v1/executions/stream``, then a disconnect."""
    scope = http_scope("/v1/executions/stream", headers)
    gone = anyio.Event()
    buffer = b""
    out: list[dict[str, Any]] = []
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal buffer
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            buffer += message.get("body", b"")
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                fields = dict(
                    line.split(": ", 1) for line in frame.decode().splitlines() if ": " in line
                )
                if "data" in fields:
                    out.append({"id": fields.get("id"), **orjson.loads(fields["data"])})
            if len(out) >= n or not message.get("more_body"):
                gone.set()

    with anyio.fail_after(20):
        await app(scope, receive, send)  # type: ignore[arg-type]
    assert status[0] == 200 or n == 0, status
    return out[:n]


@pytest.fixture
async def app(runtime: Runtime) -> AsyncIterator[Starlette]:
    async with running(create_app(runtime)) as started:
        yield started


async def test_sse_with_an_api_key_resumes_from_last_event_id(
    runtime: Runtime, app: Starlette, alice: ApiAccount, bob: ApiAccount
) -> None:
    accept = {"Accept": "text/event-stream", **alice.key_auth}
    [reset] = await sse_events(app, accept, 1)
    assert reset["type"] == "reset"
    assert reset["id"] == reset["cursor"]
    await run_executions(runtime, bob.account_id, 2)
    expected = await run_executions(runtime, alice.account_id, 2)
    first = await sse_events(app, {**accept, "Last-Event-ID": reset["cursor"]}, 9)
    rest = await sse_events(app, {**accept, "Last-Event-ID": first[-1]["id"]}, 9)
    got = [(m["execution_id"], m["seq"]) for m in first + rest]
    assert got == expected
    assert all(m["id"] == m["cursor"] for m in first + rest)


async def test_sse_refuses_without_credentials(app: Starlette) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        anonymous = await http.get("/v1/executions/stream", headers={"Accept": "text/event-stream"})
    assert anonymous.status_code == 401


@pytest.mark.parametrize(
    "accept",
    [
        "application/json",
        "text/html, application/*",
        "text/event-stream;q=0, */*",
        "text/event-stream;q=0",
        "text/event-stream; q=0.0, application/json",
        "text/event-stream;q=high",
    ],
)
async def test_an_accept_that_excludes_the_stream_gets_406(
    app: Starlette, alice: ApiAccount, accept: str
) -> None:
    """Refused at once, in the error envelope."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        request = http.build_request("GET", "/v1/executions/stream", headers=alice.key_auth)
        request.headers["Accept"] = accept
        refused = await http.send(request)
    assert refused.status_code == 406
    body = refused.json()
    assert body["error"]["code"] == "not_acceptable"
    assert "text/event-stream" in body["error"]["message"]
    assert body["error"]["request_id"] == refused.headers["X-Request-ID"]


@pytest.mark.parametrize(
    "accept",
    [
        "text/event-stream",
        "TEXT/EVENT-STREAM; charset=utf-8",
        "application/json;q=0.9, text/event-stream;q=0.1",
        "*/*",  # curl's and httpx's default
        "text/*",
        "application/json, */*;q=0.1",
        "text/*;q=0, text/event-stream",
    ],
)
async def test_any_accept_admitting_the_stream_gets_it(
    app: Starlette, alice: ApiAccount, accept: str
) -> None:
    [reset] = await sse_events(app, {"Accept": accept, **alice.key_auth}, 1)
    assert reset["type"] == "reset"


async def test_no_accept_header_gets_the_stream(app: Starlette, alice: ApiAccount) -> None:
    [reset] = await sse_events(app, alice.key_auth, 1)
    assert reset["type"] == "reset"


def test_accept_parsing() -> None:
    assert accepts_event_stream(None)
    assert accepts_event_stream("*/*")
    assert not accepts_event_stream("text/event-stream;q=0, */*")
    assert accepts_event_stream("text/html, text/event-stream")
    assert accepts_event_stream(" text/event-stream ; q=1")
    assert accepts_event_stream("")
    assert not accepts_event_stream("text/event-streams")
