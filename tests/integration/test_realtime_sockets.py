"""The realtime feed over real sockets: uvicorn serving the app on a free port in this event loop
(so the fakeredis backend works too), a real WebSocket client (``websockets``) and httpx for SSE.

What only a socket shows: a client that stops reading fills the TCP buffers until the server's
writes block, and the hub must close it with a reason the client still gets, while a fast client
on the same server keeps receiving everything; a server restart closes with 1012 and the client
resumes with its cursor; uvicorn's own handshake and logging stay out of the way.

Verdicts are completeness and order, never wall-clock time. The listening socket gets a small
send buffer (inherited by every accepted connection) so a stalled client blocks the server after
kilobytes instead of the megabytes loopback autotuning would allow.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import jwt
import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.app import create_app
from api.auth import mint_session_token
from api.cli.redact import redact_tokens_in_server_logs
from api.cli.roles import REALTIME_WS
from api.realtime.hub import FeedHub
from api.realtime.subscription import SLOW_CONSUMER
from api.realtime.websocket import WebSocketProtocol
from engine.log.ids import new_id
from engine.money.accounts import create_account
from engine.runtime import Runtime
from projections.feed import owner_feed_key
from projections.projector import Projector
from tests.api.test_realtime import next_events
from tests.golden import scenarios
from tests.helpers import eventually, holds, uvicorn_serving
from tests.integration.test_projector import make

pytestmark = pytest.mark.anyio

Json = dict[str, Any]
SERVER_SNDBUF = 4096  # bytes; Linux doubles it and turns autotuning off for the socket
SLOW_RCVBUF = 4096


@dataclass
class Server:
    """uvicorn serving the app on ``port``."""

    app: Starlette
    port: int
    uvicorn: uvicorn.Server

    @property
    def hub(self) -> FeedHub:
        hub: FeedHub = self.app.state.feed_hub
        return hub

    def ws_url(self, token: str, since: str | None = None) -> str:
        tail = f"&since={since}" if since else ""
        return f"ws://127.0.0.1:{self.port}/v1/realtime?token={token}{tail}"

    def writes_blocked(self) -> bool:
        """Whether uvicorn is holding back a send on some connection (its socket is full)."""
        connections = self.uvicorn.server_state.connections
        return any(isinstance(c, WebSocketProtocol) and c.writes_paused for c in connections)

    def subscribers(self, owner: str) -> int:
        """How many subscriptions the hub holds on ``owner``'s feed."""
        key = owner_feed_key(self.app.state.runtime.store.keys, owner)
        return len(self.hub._subscribers.get(key, ()))


@asynccontextmanager
async def serve(runtime: Runtime, *, buffer: int | None = None) -> AsyncIterator[Server]:
    """The app behind uvicorn on a free port (the lifespan runs the hub) until the block ends.

    ``buffer`` overrides the hub's per-subscriber buffer. uvicorn's keepalive pings are off and
    the close of a stalled client may wait for it as long as a test may take: a stalled test
    client is closed by the hub, then reads its close when the test lets it, whatever the load.
    """
    app = create_app(runtime)
    app.state.realtime_close_grace_s = 120.0
    if buffer is not None:
        app.state.feed_hub.buffer = buffer
    config = uvicorn.Config(
        app,
        log_config=None,
        lifespan="on",
        ws=REALTIME_WS,  # the implementation `clipstream api` serves with
        ws_ping_interval=None,
        server_header=False,
    )
    async with uvicorn_serving(config, sndbuf=SERVER_SNDBUF) as (server, port):
        yield Server(app, port, server)


class Client:
    """A WebSocket subscriber: JSON messages, pings skipped when taking events."""

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    async def receive(self) -> Json:
        with anyio.fail_after(30):
            message: Json = orjson.loads(await self.conn.recv())
        return message

    async def take_events(self, n: int) -> list[Json]:
        return await next_events(self.receive, n)

    async def events_until_closed(self) -> tuple[list[Json], ConnectionClosed]:
        """Every event still coming, and how the server closed the connection."""
        out: list[Json] = []
        while True:
            try:
                message = await self.receive()
            except ConnectionClosed as closed:
                return out, closed
            if message["type"] == "event":
                out.append(message)


@asynccontextmanager
async def subscriber(url: str, *, stalls: bool = False, **kwargs: Any) -> AsyncIterator[Client]:
    """A connected client. ``stalls``: a small receive buffer, a tiny frame queue and no
    compression (deflated feed messages are a few bytes each), so when the test stops calling
    ``receive`` the client soon stops reading and the server's writes block."""
    if stalls:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)  # before connecting
        sock.setblocking(False)
        host, port = url.removeprefix("ws://").split("/", 1)[0].split(":")
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        kwargs.update(sock=sock, max_queue=1, compression=None)
    async with connect(url, ping_interval=None, **kwargs) as conn:
        yield Client(conn)


def pairs(messages: list[Json]) -> list[tuple[str, int]]:
    return [(m["execution_id"], m["seq"]) for m in messages]


async def appended(runtime: Runtime, owner: str) -> list[tuple[str, int]]:
    """A three-step execution of ``owner`` (9 events) in the log; its (id, seq)."""
    made = await make(runtime.store, owner, scenarios.three_steps)
    return [(made.execution_id, e.seq) for e in made.events]


async def one_execution(runtime: Runtime, owner: str) -> list[tuple[str, int]]:
    """:func:`appended`, then folded by the projector (so it is in the feed)."""
    out = await appended(runtime, owner)
    await Projector(runtime).run_until_idle()
    return out


async def funded_owner(runtime: Runtime) -> tuple[str, str]:
    """A new account id with coins for many executions, and a session JWT for it."""
    owner = new_id("acc")
    await runtime.redis.set(runtime.store.keys.balance(owner), 10**12)
    return owner, mint_session_token(runtime, owner)


# -- a slow client -------------------------------------------------------------------------------
async def test_a_stalled_client_is_closed_with_a_reason_and_resumes_while_a_fast_one_keeps_up(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="clipstream.realtime")
    owner, token = await funded_owner(runtime)
    async with serve(runtime, buffer=64) as server:
        url = server.ws_url(token)
        async with subscriber(url) as fast, subscriber(url, stalls=True) as slow:
            assert (await fast.receive())["type"] == "reset"
            assert (await slow.receive())["type"] == "reset"
            # From here on the slow one reads nothing: its pipe fills, then the hub's buffer.
            expected: list[tuple[str, int]] = []
            got: list[Json] = []
            rounds = 0
            while server.subscribers(owner) == 2:
                assert rounds < 2_000, "the stalled client was never closed"
                expected += await one_execution(runtime, owner)
                got += await fast.take_events(9)
                rounds += 1
            for _ in range(2):  # and the fast one goes on after the slow one is gone
                expected += await one_execution(runtime, owner)
                got += await fast.take_events(9)
            assert pairs(got) == expected

            # The slow one wakes up: what reached its socket, then the close with the reason.
            seen, closed = await slow.events_until_closed()
        assert closed.rcvd is not None, "closed without a close frame"
        assert (closed.rcvd.code, closed.rcvd.reason) == (4008, SLOW_CONSUMER)
        assert 0 < len(seen) < len(expected)
        assert pairs(seen) == expected[: len(seen)]  # no gap in what it got
        async with subscriber(server.ws_url(token, seen[-1]["cursor"])) as again:
            rest = await again.take_events(len(expected) - len(seen))
        assert pairs(seen + rest) == expected
    assert f"closing a slow realtime subscriber of {owner} (4008)" in caplog.messages


@pytest.mark.parametrize("when", ["while the server waits to send", "once the hub closed it"])
async def test_a_stalled_client_that_vanishes_leaves_no_error_and_no_subscription(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, when: str
) -> None:
    """The server's send (of an event, or of the close) wakes up to a connection that is gone;
    that is a disconnect like any other, not an exception in the ASGI application."""
    owner, token = await funded_owner(runtime)
    closes = when == "once the hub closed it"
    async with serve(runtime, buffer=64 if closes else 100_000) as server:
        async with subscriber(server.ws_url(token), stalls=True) as slow:
            assert (await slow.receive())["type"] == "reset"

            def stalled() -> bool:
                return server.subscribers(owner) == 0 if closes else server.writes_blocked()

            rounds = 0
            while not stalled():
                assert rounds < 2_000, f"never reached the state: {when}"
                await one_execution(runtime, owner)
                rounds += 1
            slow.conn.transport.abort()  # gone without a close handshake
            await eventually(lambda: holds(not server.uvicorn.server_state.tasks))
        assert server.subscribers(owner) == 0
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


# -- tenant isolation ----------------------------------------------------------------------------
async def test_another_owners_ten_thousand_events_never_reach_a_subscriber(
    runtime: Runtime,
) -> None:
    owner, token = await funded_owner(runtime)
    noisy, noisy_token = await funded_owner(runtime)
    while runtime.store.keys.partition(noisy) != runtime.store.keys.partition(owner):
        noisy, noisy_token = await funded_owner(runtime)  # one log, one projector batch stream
    # The noisy subscriber is not the one under test: a big buffer so it is never closed.
    async with (
        serve(runtime, buffer=20_000) as server,
        subscriber(server.ws_url(token)) as mine,
        subscriber(server.ws_url(noisy_token)) as loud,
    ):
        assert (await mine.receive())["type"] == "reset"
        assert (await loud.receive())["type"] == "reset"
        theirs: list[tuple[str, int]] = []
        ours: list[tuple[str, int]] = []
        for i in range(1_112):  # 10,008 events, with one of ours in the middle
            if i == 556:
                ours += await appended(runtime, owner)
            theirs += await appended(runtime, noisy)
        await Projector(runtime).run_until_idle()
        assert pairs(await loud.take_events(len(theirs))) == theirs
        # Every noisy event has been fanned out; ours after them closes the window.
        ours += await one_execution(runtime, owner)
        assert pairs(await mine.take_events(len(ours))) == ours


# -- resuming ------------------------------------------------------------------------------------
def first_seen(messages: list[Json]) -> list[tuple[str, int]]:
    """The (execution id, seq) of ``messages`` with duplicates dropped (a client may see one
    twice across a reconnect; it must never miss one)."""
    return list(dict.fromkeys(pairs(messages)))


async def test_resume_after_a_dropped_connection_and_a_server_restart_misses_nothing(
    runtime: Runtime,
) -> None:
    owner, token = await funded_owner(runtime)
    expected: list[tuple[str, int]] = []
    async with serve(runtime) as server:
        async with subscriber(server.ws_url(token)) as client:
            assert (await client.receive())["type"] == "reset"
            expected += await one_execution(runtime, owner)
            expected += await one_execution(runtime, owner)
            got = await client.take_events(12)  # and six more are on their way
            client.conn.transport.abort()  # the network drops: no close handshake
        expected += await one_execution(runtime, owner)
        async with subscriber(server.ws_url(token, got[-1]["cursor"])) as client:
            got += await client.take_events(len(expected) - 12)
            expected += await one_execution(runtime, owner)
            server.uvicorn.should_exit = True  # a deploy: the server goes away mid-stream
            seen, closed = await client.events_until_closed()
            got += seen
    assert closed.rcvd is not None
    assert closed.rcvd.code == 1012  # service restart: come back with your cursor
    expected += await one_execution(runtime, owner)  # while no API runs
    async with serve(runtime) as server, subscriber(server.ws_url(token, got[-1]["cursor"])) as c:
        got += await c.take_events(len(expected) - len(first_seen(got)))
    assert first_seen(got) == expected


async def test_a_cursor_trimmed_away_while_disconnected_gets_a_reset_then_the_live_feed(
    runtime: Runtime,
) -> None:
    owner, token = await funded_owner(runtime)
    async with serve(runtime) as server:
        async with subscriber(server.ws_url(token)) as client:
            assert (await client.receive())["type"] == "reset"
            await one_execution(runtime, owner)
            cursor = (await client.take_events(9))[-1]["cursor"]
        # Away for long: the owner's feed moves on and is trimmed past the cursor.
        for _ in range(3):
            await appended(runtime, owner)
        running = await make(runtime.store, owner, scenarios.three_steps, upto=3)
        xid = running.execution_id
        later = scenarios.three_steps(xid, owner)[3:]
        await Projector(runtime).run_until_idle()
        key = owner_feed_key(runtime.store.keys, owner)
        await runtime.redis.xtrim(key, maxlen=2, approximate=False)  # 5 entries: 1 per execution
        newest = (await runtime.redis.xrevrange(key, "+", "-", count=1))[0][0].decode()

        async with subscriber(server.ws_url(token, cursor)) as client:
            reset = await client.receive()
            assert reset["type"] == "reset"
            assert reset["cursor"] == newest
            assert [e["execution_id"] for e in reset["executions"]] == [xid]
            await runtime.store.log.append(xid, 3, later)
            await Projector(runtime).run_until_idle()
            rest = await client.take_events(len(later))
    assert pairs(rest) == [(xid, e.seq) for e in later]


# -- Server-Sent Events --------------------------------------------------------------------------
async def sse_messages(base_url: str, headers: dict[str, str], n: int) -> list[Json]:
    """The first ``n`` messages of ``GET /v1/executions/stream`` read off the socket (``id`` is
    the frame's ``id:`` line), then the connection is dropped."""
    out: list[Json] = []
    fields: dict[str, str] = {}
    with anyio.fail_after(30):
        async with (
            httpx.AsyncClient(base_url=base_url) as http,
            http.stream("GET", "/v1/executions/stream", headers=headers) as response,
        ):
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    continue  # a ping
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                out.append({"id": fields.get("id"), **orjson.loads(fields["data"])})
                fields = {}
                if len(out) == n:
                    break
    return out


async def test_sse_over_the_socket_resumes_from_last_event_id_with_the_callers_events_only(
    runtime: Runtime,
) -> None:
    account, api_key = await create_account(runtime, name="sse", coins_micro=10**12)
    owner, other = account.account_id, (await funded_owner(runtime))[0]
    async with serve(runtime) as server:
        base = f"http://127.0.0.1:{server.port}"
        headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {api_key}"}
        [reset] = await sse_messages(base, headers, 1)
        assert reset["type"] == "reset"
        expected: list[tuple[str, int]] = []
        for _ in range(2):
            await one_execution(runtime, other)
            expected += await one_execution(runtime, owner)
        first = await sse_messages(base, {**headers, "Last-Event-ID": reset["id"]}, 12)
        await one_execution(runtime, other)
        expected += await one_execution(runtime, owner)
        # The 12th message is the 3rd event of the second execution's entry (a batch's events of
        # an execution share one): resuming from it sends that entry whole again, then the third.
        rest = await sse_messages(base, {**headers, "Last-Event-ID": first[-1]["id"]}, 18)
    assert first_seen(first + rest) == expected
    assert pairs(rest[:3]) == pairs(first[9:12])  # the duplicates: never a gap
    assert all(m["id"] == m["cursor"] for m in first + rest)


# -- refusals ------------------------------------------------------------------------------------
async def test_every_refusal_is_close_4401_before_any_message_over_the_socket(
    runtime: Runtime,
) -> None:
    """The cases of tests/api/test_realtime.py through uvicorn (its handshake must not turn them
    into an HTTP 403 or a bare disconnect), plus an API key sent as a bearer header."""
    owner, token = await funded_owner(runtime)
    await one_execution(runtime, owner)  # there is something to leak
    _, api_key = await create_account(runtime, name="ws", coins_micro=0)
    forged = jwt.encode(
        {"sub": owner, "iat": 0, "exp": 2**40, "aud": "clipstream", "iss": "clipstream"},
        "another secret, 32 bytes or more!",
        algorithm="HS256",
    )
    expired = mint_session_token(runtime, owner, ttl_s=-3600)
    async with serve(runtime) as server:
        base = f"ws://127.0.0.1:{server.port}/v1/realtime"
        cases: list[tuple[str, dict[str, str]]] = [
            (base, {}),
            (f"{base}?token={api_key}", {}),
            (base, {"Authorization": f"Bearer {api_key}"}),
            (server.ws_url(forged), {}),
            (server.ws_url(expired), {}),
            (server.ws_url(token), {"Origin": "https://evil.example"}),
        ]
        for url, headers in cases:
            async with subscriber(url, additional_headers=headers) as client:
                with pytest.raises(ConnectionClosed) as refused:
                    await client.receive()
            assert refused.value.rcvd is not None, url
            assert refused.value.rcvd.code == 4401, (url, headers)


# -- logs ----------------------------------------------------------------------------------------
async def test_the_token_never_reaches_a_server_log_line(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """The server logs each WebSocket handshake (api.realtime.websocket, with the access log) by its
    path alone, and uvicorn's HTTP access lines pass through the filters the CLI installs."""
    redact_tokens_in_server_logs()
    _, token = await funded_owner(runtime)
    caplog.set_level(logging.INFO, logger="clipstream.websocket")
    with caplog.at_level(logging.INFO, logger="uvicorn"):
        async with serve(runtime) as server:
            async with subscriber(server.ws_url(token)) as client:
                assert (await client.receive())["type"] == "reset"
            async with subscriber(server.ws_url(token + "x")) as refused:
                with pytest.raises(ConnectionClosed):
                    await refused.receive()
    lines = [r.getMessage() for r in caplog.records]
    assert [line for line in lines if '"WebSocket /v1/realtime" accepted' in line], lines
    assert not [line for line in lines if token in line]


# -- many clients --------------------------------------------------------------------------------
async def test_two_thousand_clients_of_four_hundred_owners_each_get_exactly_their_owners_events(
    runtime: Runtime,
) -> None:
    """Thousands of connections on one server: every client gets its owner's events, in order,
    and nothing of anyone else's; owners without news cost their clients nothing and get nothing.
    Half the owners get an execution, then every owner one more: the second closes the window in
    which anything foreign could have arrived."""
    owners = [new_id("acc") for _ in range(400)]
    pipe = runtime.redis.pipeline(transaction=False)
    for owner in owners:
        pipe.set(runtime.store.keys.balance(owner), 10**12)
    await pipe.execute()
    tokens = {owner: mint_session_token(runtime, owner) for owner in owners}
    async with serve(runtime) as server, AsyncExitStack() as stack:
        clients: list[tuple[str, Client]] = []

        async def join(owner: str) -> None:
            client = await stack.enter_async_context(subscriber(server.ws_url(tokens[owner])))
            assert (await client.receive())["type"] == "reset"
            clients.append((owner, client))

        # 20 handshakes at a time: the real backend's test client has a pool of 100 connections
        # that refuses past it (a deployment's blocking pool waits), and the hub holds 17.
        for start in range(0, 2_000, 20):
            async with anyio.create_task_group() as tg:
                for i in range(start, start + 20):
                    tg.start_soon(join, owners[i % len(owners)])
        assert server.hub.subscriptions == 2_000
        expected: dict[str, list[tuple[str, int]]] = {owner: [] for owner in owners}
        for owner in owners[:200]:
            expected[owner] += await appended(runtime, owner)
        await Projector(runtime).run_until_idle()
        for owner in owners:
            expected[owner] += await appended(runtime, owner)
        await Projector(runtime).run_until_idle()

        got: dict[int, list[tuple[str, int]]] = {}

        async def read(i: int, owner: str, client: Client) -> None:
            got[i] = pairs(await client.take_events(len(expected[owner])))

        async with anyio.create_task_group() as tg:
            for i, (owner, client) in enumerate(clients):
                tg.start_soon(read, i, owner, client)
    for i, (owner, _) in enumerate(clients):
        assert got[i] == expected[owner], owner
