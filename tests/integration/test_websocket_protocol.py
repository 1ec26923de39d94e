"""api.realtime.websocket, the realtime feed's WebSocket server, against RFC 6455 over real sockets.

uvicorn serves a small ASGI application with ``ws=WebSocketProtocol`` on a free port in this
event loop. Conforming traffic comes from the ``websockets`` client (an independent
implementation: it checks our handshake answer, our framing and our close frames); what a
conforming client never sends (unmasked frames, reserved bits, bad UTF-8, broken handshakes)
comes from a raw socket. Verdicts are codes, payloads and statuses, never elapsed time.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import anyio
import pytest
import uvicorn
from starlette.types import Message, Receive, Scope, Send
from uvicorn.server import ServerState
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from api.realtime.rounds import SLICES
from api.realtime.websocket import WebSocketProtocol, _Server, _servers
from api.realtime.ws_codec import (
    PING,
    TEXT,
    TOO_BIG,
    Frame,
    Upgrade,
    Violation,
    accept_key,
    next_frame,
    parse_upgrade,
    unmask,
)
from tests.helpers import eventually, holds, uvicorn_serving

pytestmark = pytest.mark.anyio

MAX_SIZE = 4096
TIMEOUT_S = 30  # bounds how long a broken build takes to fail


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


seen: list[Message] = []  # what the application received, by the tests that look


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Echoes every message; ``/refuse`` is refused, ``/close/<code>`` closes with that code
    after the first message, ``/boom`` fails after accepting, ``/sub`` picks the last offered
    subprotocol. Every event it receives is recorded in ``seen``."""
    assert scope["type"] == "websocket"
    path = scope["path"]
    event = await receive()
    seen.append(event)
    if path == "/refuse":
        await send({"type": "websocket.close"})
        return
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if path == "/sub":
        accept["subprotocol"] = scope["subprotocols"][-1]
    await send(accept)
    if path == "/boom":
        raise RuntimeError("the application failed")
    while True:
        event = await receive()
        seen.append(event)
        if event["type"] == "websocket.disconnect":
            return
        if path.startswith("/close/"):
            await send({"type": "websocket.close", "code": int(path[7:]), "reason": "as asked"})
            return
        reply = {k: v for k, v in event.items() if k in ("text", "bytes")}
        await send({"type": "websocket.send", **reply})


@asynccontextmanager
async def server(ping_interval: float | None = None) -> AsyncIterator[int]:
    """The echo application behind uvicorn with our protocol; its port."""
    seen.clear()
    config = uvicorn.Config(
        echo,
        log_config=None,
        lifespan="off",
        ws=WebSocketProtocol,
        ws_max_size=MAX_SIZE,
        ws_ping_interval=ping_interval,
    )
    async with uvicorn_serving(config) as (_, port):
        yield port


# -- conforming clients --------------------------------------------------------------------------
async def test_text_and_binary_messages_echo_whole_including_fragmented_ones() -> None:
    async with server() as port, connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
        await ws.send("héllo, wörld")
        assert await ws.recv() == "héllo, wörld"
        await ws.send(b"\x00\x01\xff")
        assert await ws.recv() == b"\x00\x01\xff"
        await ws.send(["frag", "mented ", "text"])  # three frames, one message
        assert await ws.recv() == "fragmented text"
        big = os.urandom(3000)  # over 125 and 65535 > it > 126: the 16-bit length
        await ws.send(big)
        assert await ws.recv() == big
    assert [e["type"] for e in seen[:2]] == ["websocket.connect", "websocket.receive"]


async def test_a_message_over_the_maximum_is_closed_1009_even_in_fragments() -> None:
    async with server() as port:
        async with connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
            await ws.send(b"x" * (MAX_SIZE + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009
        async with connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
            await ws.send([b"x" * 3000, b"y" * 3000])
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1009


async def test_pings_are_answered() -> None:
    async with server() as port, connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as ws:
        pong = await ws.ping(b"are you there")
        with anyio.fail_after(TIMEOUT_S):
            await pong


async def test_the_clients_close_reaches_the_application_and_is_echoed() -> None:
    async with server() as port:
        ws = await connect(f"ws://127.0.0.1:{port}/", ping_interval=None)
        await ws.close(4000, "bye")
        assert (ws.close_code, ws.close_reason) == (4000, "bye")  # what the server sent back
        await eventually(lambda: holds(bool(seen) and seen[-1]["type"] == "websocket.disconnect"))
    assert seen[-1] == {"type": "websocket.disconnect", "code": 4000, "reason": "bye"}


async def test_the_applications_close_reaches_the_client_with_its_code_and_reason() -> None:
    async with server() as port, connect(f"ws://127.0.0.1:{port}/close/4008") as ws:
        await ws.send("close now")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4008, "as asked")


async def test_a_close_before_accepting_is_a_403() -> None:
    async with server() as port:
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{port}/refuse")
    assert refused.value.response.status_code == 403


async def test_an_application_failing_after_accepting_closes_1011() -> None:
    async with server() as port, connect(f"ws://127.0.0.1:{port}/boom") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011


async def test_the_application_picks_an_offered_subprotocol() -> None:
    offered: Any = ["a", "b"]
    async with server() as port, connect(f"ws://127.0.0.1:{port}/sub", subprotocols=offered) as ws:
        assert ws.subprotocol == "b"


async def test_a_server_shutdown_closes_1012() -> None:
    async with server() as port:
        ws = await connect(f"ws://127.0.0.1:{port}/", ping_interval=None)
    with pytest.raises(ConnectionClosed) as closed:
        await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1012


# -- keepalive -----------------------------------------------------------------------------------
async def test_a_client_that_answers_pings_stays_and_one_that_does_not_is_closed_1011() -> None:
    """The keepalive's ticks are driven here (its timer is an hour away): a connection that has
    not answered the last tick's ping by the next tick is closed 1011. Whatever the machine's
    load, the verdict does not depend on how fast anyone answers."""
    async with (
        server(ping_interval=3600.0) as port,
        connect(f"ws://127.0.0.1:{port}/", ping_interval=None) as answering,
        raw(port) as silent,  # reads, never answers
    ):
        [srv] = [srv for srv in list(_servers.values()) if srv.keepalive]
        connections = [c for _ in range(srv.keepalive.slices) for c in srv.keepalive.next_slice()]
        assert len(connections) == 2
        for connection in connections:
            connection.keepalive()  # a ping to each
        opcode, _ = await silent.frame()
        assert opcode == 0x9

        # The conforming client answers (websockets does, unasked); wait until its pong is in.
        async def answered() -> int:
            return sum(not c._pong_due for c in connections)

        await eventually(answered, until=lambda n: n == 1)
        for connection in connections:
            connection.keepalive()  # the silent one is closed, the other pinged again
        opcode, payload = await silent.frame()
        while opcode != 0x8:
            opcode, payload = await silent.frame()
        assert close_code(payload) == 1011
        await answering.send("still here")
        assert await answering.recv() == "still here"


# -- what conforming clients never send ----------------------------------------------------------
class Raw:
    """A WebSocket client on a bare socket: any bytes it is told to send."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def handshake(self, **headers: str) -> bytes:
        fields = {
            "Host": "localhost",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": KEY,
            "Sec-WebSocket-Version": "13",
        }
        fields.update({k.replace("_", "-"): v for k, v in headers.items()})
        head = "GET / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v)
        self.writer.write(head.encode() + b"\r\n")
        with anyio.fail_after(TIMEOUT_S):
            return await self.reader.readuntil(b"\r\n\r\n")

    def send(self, opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True,
             rsv: int = 0) -> None:  # fmt: skip
        key = os.urandom(4) if mask else b""
        length = len(payload)
        head = bytes(((0x80 if fin else 0) | rsv | opcode,))
        bit = 0x80 if mask else 0
        if length < 126:
            head += bytes((bit | length,))
        else:
            head += struct.pack("!BH", bit | 126, length)
        self.writer.write(head + key + (unmask(payload, key) if mask else payload))

    async def frame(self) -> tuple[int, bytes]:
        with anyio.fail_after(TIMEOUT_S):
            b0, b1 = await self.reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                length = int.from_bytes(await self.reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await self.reader.readexactly(8), "big")
            return b0 & 0x0F, await self.reader.readexactly(length)

    async def closed_with(self) -> int:
        """The code of the server's close frame (the frames before it skipped)."""
        while True:
            opcode, payload = await self.frame()
            if opcode == 0x8:
                return close_code(payload)


KEY = base64.b64encode(b"sixteen byte key").decode()


def close_code(payload: bytes) -> int:
    return int.from_bytes(payload[:2], "big")


@asynccontextmanager
async def raw(port: int, *, handshake: bool = True) -> AsyncIterator[Raw]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    client = Raw(reader, writer)
    try:
        if handshake:
            answer = await client.handshake()
            assert answer.startswith(b"HTTP/1.1 101 "), answer
            fields = dict(line.split(b": ", 1) for line in answer.split(b"\r\n")[1:] if line)
            assert {k.lower(): v for k, v in fields.items()}[b"sec-websocket-accept"] == accept_key(
                KEY.encode()
            )
        yield client
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"opcode": 0x1, "payload": b"plain", "mask": False}, 1002),  # unmasked
        ({"opcode": 0x1, "payload": b"x", "rsv": 0x40}, 1002),  # a reserved bit (no extension)
        ({"opcode": 0x0, "payload": b"x"}, 1002),  # a continuation of nothing
        ({"opcode": 0x3, "payload": b"x"}, 1002),  # an unknown opcode
        ({"opcode": 0x9, "payload": b"x", "fin": False}, 1002),  # a fragmented ping
        ({"opcode": 0x1, "payload": b"\xff\xfe"}, 1007),  # text that is not UTF-8
        ({"opcode": 0x8, "payload": b"\x03\xed"}, 1002),  # close code 1005 may not be sent
        ({"opcode": 0x8, "payload": b"\x03"}, 1002),  # a one-byte close body
    ],
)
async def test_protocol_violations_are_closed_with_the_rfcs_code(
    frame: dict[str, Any], code: int
) -> None:
    async with server() as port, raw(port) as client:
        client.send(**frame)
        assert await client.closed_with() == code


async def test_a_new_message_inside_a_fragmented_one_is_a_protocol_error() -> None:
    async with server() as port, raw(port) as client:
        client.send(0x1, b"first half", fin=False)
        client.send(0x1, b"another message")
        assert await client.closed_with() == 1002


async def test_pings_between_fragments_are_answered_and_the_message_arrives_whole() -> None:
    async with server() as port, raw(port) as client:
        client.send(0x1, b"frag", fin=False)
        client.send(0x9, b"ping!")
        client.send(0x0, b"mented")
        assert await client.frame() == (0xA, b"ping!")
        assert await client.frame() == (0x1, b"fragmented")


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Sec_WebSocket_Version": "8"}, b"426"),
        ({"Sec_WebSocket_Key": "too short"}, b"400"),
        ({"Sec_WebSocket_Key": ""}, b"400"),
    ],
)
async def test_a_bad_handshake_is_an_http_error(headers: dict[str, str], status: bytes) -> None:
    async with server() as port, raw(port, handshake=False) as client:
        answer = await client.handshake(**headers)
    assert answer.split(b" ")[1] == status, answer
    assert not seen  # the application never saw it


def test_unmask_is_its_own_inverse_at_every_length() -> None:
    key = b"\x01\x02\x03\x04"
    for n in range(0, 20):
        data = bytes(range(n))
        masked = unmask(data, key)
        assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(data))
        assert unmask(masked, key) == data


async def test_the_keepalive_round_is_spread_so_one_tick_pings_one_slot() -> None:
    """10,000 pings at once held the event loop for ~0.3 s (every subscriber's next event
    waited): one tick pings one slot's connections, and each is pinged once a round."""

    class Connection:
        pings = 0

        def keepalive(self) -> None:
            self.pings += 1

    config = uvicorn.Config(echo, ws_ping_interval=3600.0)  # the timer never fires here
    srv = _Server(config, ServerState())
    connections = [Connection() for _ in range(SLICES * 3)]
    for connection in connections:
        srv.opened(cast(WebSocketProtocol, connection))
    srv._keepalive()
    assert sum(c.pings for c in connections) == 3
    for _ in range(SLICES - 1):
        srv._keepalive()
    assert {c.pings for c in connections} == {1}


def test_a_frame_split_anywhere_is_read_only_once_whole() -> None:
    """TCP delivers a frame in pieces at any byte: the reader waits for all of it (the 16-bit
    length form here), then gives the payload unmasked and where the next frame starts."""
    payload = os.urandom(300)
    key = b"\x0a\x0b\x0c\x0d"
    wire = bytes((0x81, 0x80 | 126)) + (300).to_bytes(2, "big") + key + unmask(payload, key)
    following = bytes((0x89, 0x80)) + key  # an empty ping after it
    for cut in range(len(wire)):
        assert next_frame(wire[:cut], 0, 4096) is None
    got = next_frame(wire + following, 0, 4096)
    assert got == Frame(TEXT, True, payload, len(wire))
    assert next_frame(wire + following, len(wire), 4096) == Frame(PING, True, b"", len(wire) + 6)
    # Too big is known from the header alone, before the payload arrives.
    assert next_frame(wire[:4], 0, 299) == Violation(TOO_BIG, "message over the size limit")


@pytest.mark.parametrize(
    ("head", "answer"),
    [
        (b"GET / HTTP/1.0\r\nHost: h", b"400"),
        (b"POST / HTTP/1.1\r\nHost: h", b"400"),
        (b"GET / HTTP/1.1\r\nno colon here", b"400"),
        (b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive", b"400"),
    ],
)
def test_parse_upgrade_refuses_what_is_not_a_websocket_handshake(
    head: bytes, answer: bytes
) -> None:
    refused = parse_upgrade(head)
    assert isinstance(refused, bytes)
    assert refused.split(b" ")[1] == answer


def test_parse_upgrade_reads_the_target_headers_key_and_subprotocols() -> None:
    head = (
        b"GET /v1/realtime?token=t HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
        b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\nSec-WebSocket-Protocol: a, b"
    )
    got = parse_upgrade(head)
    assert isinstance(got, Upgrade)
    assert got.target == b"/v1/realtime?token=t"
    assert got.accept == accept_key(KEY.encode())
    assert got.subprotocols == ("a", "b")
    assert (b"host", b"h") in got.headers


def test_one_text_sent_to_many_connections_is_framed_once() -> None:
    """The hub hands one event's text to every subscriber of its owner: framed once, and a new
    text framed anew."""
    srv = _Server(uvicorn.Config(echo), ServerState())
    event = "".join(["{", '"type":"event"', "}"])  # built at run time: its own str object
    first = srv.framed(event)
    assert srv.framed(event) is first
    assert first == bytes((0x81, len(event))) + event.encode()
    other = srv.framed("é" * 200)
    assert other[:4] == bytes((0x81, 126)) + (400).to_bytes(2, "big")
    assert other[4:] == ("é" * 200).encode()
