"""The server side of RFC 6455 behind uvicorn: the realtime feed's WebSockets, small per connection.

A realtime subscriber holds its WebSocket for hours and a process holds 10,000 of them, so what
each connection keeps is what a subscriber costs. uvicorn's own implementations keep, per
connection, a protocol object with an ``asyncio.Queue`` (four deques), an ``Event``, timers,
and a sans-I/O connection with the parsed handshake: about 15 KB
(``bench/results/realtime-2026-12-05-memory.md``). This one keeps a slotted object: the
transport, a state, one future while the application waits to receive or to write, and nothing
else while the connection idles; keepalive pings are one timer for all connections.

uvicorn takes a WebSocket protocol class as ``Config(ws=...)`` and hands it each upgrade request
(its HTTP protocol parsed the head and decided to upgrade): ``WebSocketProtocol(config=...,
server_state=..., app_state=...)``, ``connection_made(transport)``, then the request head as
``data_received`` bytes. The application is served the ASGI WebSocket interface (spec 2.4)
without the denial-response extension: a ``websocket.close`` before ``websocket.accept`` is a
``403``.

What it does, from the RFC: the handshake (version 13, a 16-byte key, subprotocols offered to
the application; no extensions, so no per-message deflate), masked client frames only,
fragmented messages reassembled up to ``ws_max_size`` (``1009`` beyond), text checked as UTF-8
(``1007``), pings answered, the closing handshake both ways (the server's close waits for the
echo at most :data:`CLOSE_TIMEOUT_S`), and any protocol error closed with ``1002``. Writes
respect the transport's flow control: ``send`` waits while the socket's buffer is full, which is
how a client that stops reading makes its sender wait (and the feed hub close it, 4008).
Keepalive: every ``ws_ping_interval`` seconds each open connection is pinged (the round spread
over the interval), and one that has not answered the previous ping by then is closed with
``1011``.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import unquote

from uvicorn.protocols.utils import ClientDisconnected, get_local_addr, get_remote_addr, is_ssl

from api.realtime.rounds import Round
from api.realtime.ws_codec import (
    ABNORMAL,
    BINARY,
    CLOSE,
    CONTINUATION,
    INTERNAL_ERROR,
    INVALID_DATA,
    MAX_HEAD,
    NO_STATUS,
    NORMAL,
    PING,
    PONG,
    PROTOCOL_ERROR,
    REFUSED,
    RESTART,
    SERVER_ERROR,
    TEXT,
    Violation,
    bad_request,
    close_frame,
    frame,
    next_frame,
    parse_upgrade,
    response,
    valid_close_code,
)

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Scope
    from uvicorn.config import Config
    from uvicorn.server import ServerState

log = logging.getLogger("clipstream.websocket")

CLOSE_TIMEOUT_S: Final = 10.0  # how long a server-sent close waits for the client's

# A connection's states.
REQUEST = -1  # reading the handshake request
HANDSHAKE = 0  # the request is read; the application has not accepted yet
OPEN = 1
CLOSING = 2  # our close frame is sent; waiting for the client's
CLOSED = 3


class _Server:
    """What every connection of one uvicorn server shares: the application, the settings and the
    keepalive round (:class:`api.realtime.rounds.Round`: one timer, one slice of the connections per
    tick)."""

    def __init__(self, config: Config, server_state: ServerState) -> None:
        if not config.loaded:
            config.load()
        self.app = cast("ASGIApp", config.loaded_app)
        self.root_path = config.root_path
        self.asgi_version = config.asgi_version
        self.max_size = config.ws_max_size
        self.ping_interval = config.ws_ping_interval or 0.0
        self.access_log = config.access_log
        self.state = server_state
        self.keepalive: Round[WebSocketProtocol] = Round()
        # The last text message framed, and its frame: the hub hands one event's text (one str)
        # to every subscriber of its owner, one send after another, so it is framed once.
        self.last_text = ""
        self.last_frame = frame(TEXT, b"")
        self._pinger: asyncio.TimerHandle | None = None

    def opened(self, conn: WebSocketProtocol) -> int:
        """Count ``conn`` in the keepalive round; its slice."""
        index = self.keepalive.join(conn)
        if self._pinger is None and self.ping_interval > 0:
            self._schedule()
        return index

    def framed(self, text: str) -> bytes:
        """``text`` as a text frame (the last one's frame again when it is the same str)."""
        if text is not self.last_text:
            self.last_text, self.last_frame = text, frame(TEXT, text.encode())
        return self.last_frame

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        tick = self.ping_interval / self.keepalive.slices
        self._pinger = loop.call_later(tick, self._keepalive)

    def _keepalive(self) -> None:
        self._pinger = None
        for conn in self.keepalive.next_slice():
            conn.keepalive()
        if self.keepalive:
            self._schedule()


_servers: weakref.WeakKeyDictionary[ServerState, _Server] = weakref.WeakKeyDictionary()


class WebSocketProtocol(asyncio.Protocol):
    """One WebSocket connection (``uvicorn.Config(ws=WebSocketProtocol)``)."""

    __slots__ = (
        "_accept",
        "_app_state",
        "_buf",
        "_close_timer",
        "_closed_with",
        "_drain",
        "_inbox",
        "_message",
        "_path",
        "_pong_due",
        "_read_paused",
        "_receiver",
        "_slot",
        "_srv",
        "_state",
        "_subprotocols",
        "_text",
        "_write_paused",
        "transport",
    )

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any]):
        srv = _servers.get(server_state)
        if srv is None:
            srv = _servers[server_state] = _Server(config, server_state)
        self._srv = srv
        self._app_state: dict[str, Any] | None = app_state
        self.transport: asyncio.Transport | None = None
        self._state = REQUEST
        self._accept: bytes | None = None  # Sec-WebSocket-Accept, until accepted
        self._subprotocols: tuple[str, ...] = ()
        self._buf = b""  # received bytes not yet a whole frame
        self._message: bytearray | None = None  # a fragmented message being reassembled
        self._path = ""  # the request's path, for the access log
        self._text = False  # whether that message is text
        self._inbox: list[Message] | None = None  # events the application has not received
        self._receiver: asyncio.Future[None] | None = None  # a receive waiting for an event
        self._drain: asyncio.Future[None] | None = None  # a send waiting for the socket to drain
        self._write_paused = False
        self._read_paused = False
        self._pong_due = False
        self._close_timer: asyncio.TimerHandle | None = None
        self._slot = -1  # the keepalive slot, while open
        self._closed_with: tuple[int, str] | None = None  # the disconnect the application got

    # -- asyncio.Protocol ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._srv.state.connections.add(self)  # type: ignore[arg-type]

    def connection_lost(self, exc: Exception | None) -> None:
        self._srv.state.connections.discard(self)
        self._leave_keepalive()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self._state = CLOSED
        self._disconnected(ABNORMAL, "")
        _wake(self._drain)  # a send waiting for the socket to drain: it will not

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        _wake(self._drain)

    @property
    def writes_paused(self) -> bool:
        """Whether the socket's buffer is full (a client not reading): sends wait."""
        return self._write_paused

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        if self._state == REQUEST:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD:
                    self._refuse(bad_request("request head too large"))
                else:
                    self._buf = buf
                return
            self._buf = buf[end + 4 :]
            self._handshake(buf[:end])
            return
        if self._state != OPEN:
            # Before the accept: kept for after it. After our close: only the client's close
            # matters, and the frames before it are read to find it.
            if self._state == HANDSHAKE:
                self._buf = buf
                return
            if self._state == CLOSED:
                return
        self._buf = buf
        self._read_frames()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; connection_lost tells the application

    # -- the handshake ---------------------------------------------------------------------------
    def _handshake(self, head: bytes) -> None:
        transport = self.transport
        assert transport is not None
        app_state, self._app_state = self._app_state, None
        upgrade = parse_upgrade(head)
        if isinstance(upgrade, bytes):
            self._refuse(upgrade)
            return
        self._accept = upgrade.accept
        self._subprotocols = upgrade.subprotocols
        srv = self._srv
        raw_path, _, query = upgrade.target.partition(b"?")
        self._path = srv.root_path + unquote(raw_path.decode("latin-1"))
        scope: Scope = {
            "type": "websocket",
            "asgi": {"version": srv.asgi_version, "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "wss" if is_ssl(transport) else "ws",
            "server": get_local_addr(transport),
            "client": get_remote_addr(transport),
            "root_path": srv.root_path,
            "path": self._path,
            "raw_path": srv.root_path.encode() + raw_path,
            "query_string": query,
            "headers": upgrade.headers,
            "subprotocols": list(self._subprotocols),
            "state": dict(app_state) if app_state else {},
            "extensions": {},
        }
        self._state = HANDSHAKE
        self._inbox = [{"type": "websocket.connect"}]
        task = asyncio.get_running_loop().create_task(self._run(scope))
        tasks = srv.state.tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def _refuse(self, answer: bytes) -> None:
        """Answer the handshake with an HTTP error and close."""
        self._state = CLOSED
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(answer)
            transport.close()

    async def _run(self, scope: Scope) -> None:
        try:
            await self._srv.app(scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except Exception:
            log.exception("the WebSocket application failed")
            if self._state == HANDSHAKE:
                self._refuse(SERVER_ERROR)
            else:
                self._close(INTERNAL_ERROR, "")
        else:
            if self._state == HANDSHAKE:
                log.error("the WebSocket application returned without accepting or closing")
                self._refuse(SERVER_ERROR)
            elif self._state == OPEN:
                self._close(NORMAL, "")

    # -- the ASGI interface ----------------------------------------------------------------------
    async def receive(self) -> Message:
        """The next event: ``websocket.connect`` first, then the client's messages, then one
        ``websocket.disconnect`` (repeated to any later call)."""
        while not self._inbox:
            if self._closed_with is not None:
                code, reason = self._closed_with
                return {"type": "websocket.disconnect", "code": code, "reason": reason}
            waiter = self._receiver = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._receiver = None
        event = self._inbox.pop(0)
        if not self._inbox:
            self._inbox = None
            if self._read_paused and self.transport is not None:
                self._read_paused = False
                self.transport.resume_reading()
        return event

    async def send(self, message: Message) -> None:
        kind = message["type"]
        while self._write_paused and self._state != CLOSED:
            waiter = self._drain = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._drain = None
        transport = self.transport
        assert transport is not None
        if self._state == HANDSHAKE:
            if kind == "websocket.accept":
                self._accept_with(message)
            elif kind == "websocket.close":
                self._access("403")
                self._refuse(REFUSED)
                self._disconnected(ABNORMAL, "")
            else:
                raise RuntimeError(f"expected websocket.accept or websocket.close, not {kind}")
        elif self._state == OPEN and not transport.is_closing():
            if kind == "websocket.send":
                data = message.get("bytes")
                if data is None:
                    transport.write(self._srv.framed(message["text"]))
                else:
                    transport.write(frame(BINARY, data))
            elif kind == "websocket.close":
                code: int = message.get("code") or NORMAL
                reason: str = message.get("reason") or ""
                self._close(code, reason)
            else:
                raise RuntimeError(f"expected websocket.send or websocket.close, not {kind}")
        elif kind == "websocket.close":
            pass  # closed already (by either side): nothing more to say
        else:
            raise ClientDisconnected(f"{kind} on a closed WebSocket")

    def _accept_with(self, message: Message) -> None:
        transport = self.transport
        assert transport is not None
        assert self._accept is not None
        headers = [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", self._accept),
        ]
        subprotocol = message.get("subprotocol")
        if subprotocol is not None:
            if subprotocol not in self._subprotocols:
                raise RuntimeError(f"subprotocol {subprotocol!r} was not offered")
            headers.append((b"sec-websocket-protocol", subprotocol.encode()))
        headers += self._srv.state.default_headers
        headers += [(bytes(n).lower(), bytes(v)) for n, v in message.get("headers") or ()]
        self._accept = None
        self._subprotocols = ()
        self._state = OPEN
        self._access("accepted")
        transport.write(response("101 Switching Protocols", headers))
        self._slot = self._srv.opened(self)
        if self._buf:
            self._read_frames()

    def _access(self, outcome: str) -> None:
        """The access log's line for a handshake (``access_log``): the path, never the query
        string, where the realtime feed's token travels."""
        if self._srv.access_log and self.transport is not None:
            peer = get_remote_addr(self.transport)
            where = f"{peer[0]}:{peer[1]}" if peer else "-"
            log.info('%s - "WebSocket %s" %s', where, self._path, outcome)

    # -- frames ----------------------------------------------------------------------------------
    def _read_frames(self) -> None:
        buf, pos = self._buf, 0
        while self._state in (OPEN, CLOSING):
            so_far = len(self._message) if self._message is not None else 0
            got = next_frame(buf, pos, self._srv.max_size - so_far)
            if got is None:
                break
            if isinstance(got, Violation):
                self._fail(got.code, got.reason)
                return
            pos = got.end
            self._frame(got.opcode, got.fin, got.payload)
        self._buf = buf[pos:] if pos < len(buf) and self._state != CLOSED else b""

    def _frame(self, opcode: int, fin: bool, payload: bytes) -> None:
        if opcode == CLOSE:
            self._client_closed(payload)
        elif opcode == PING:
            if self._state == OPEN and self.transport is not None:
                self.transport.write(frame(PONG, payload))
        elif opcode == PONG:
            self._pong_due = False
        elif self._state != OPEN:
            pass  # a message after our close: read past it to the client's close
        elif opcode == CONTINUATION:
            if self._message is None:
                self._fail(PROTOCOL_ERROR, "continuation of no message")
                return
            self._message += payload
            if fin:
                data, self._message = bytes(self._message), None
                self._received(data)
        elif opcode in (TEXT, BINARY):
            if self._message is not None:
                self._fail(PROTOCOL_ERROR, "a new message inside a fragmented one")
                return
            self._text = opcode == TEXT
            if fin:
                self._received(payload)
            else:
                self._message = bytearray(payload)
        else:
            self._fail(PROTOCOL_ERROR, f"unknown opcode {opcode}")

    def _received(self, data: bytes) -> None:
        if self._text:
            try:
                text = data.decode()
            except UnicodeDecodeError:
                self._fail(INVALID_DATA, "text that is not UTF-8")
                return
            self._deliver({"type": "websocket.receive", "text": text})
        else:
            self._deliver({"type": "websocket.receive", "bytes": data})
        if self._inbox and not self._read_paused and self.transport is not None:
            self._read_paused = True  # the application reads on before the client sends more
            self.transport.pause_reading()

    def _client_closed(self, payload: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if len(payload) == 1:
            self._fail(PROTOCOL_ERROR, "close frame of one byte")
            return
        code = int.from_bytes(payload[:2], "big") if payload else NO_STATUS
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            self._fail(INVALID_DATA, "close reason that is not UTF-8")
            return
        if payload and not valid_close_code(code):
            self._fail(PROTOCOL_ERROR, f"close code {code}")
            return
        if self._state == OPEN:  # the client closes first: echo its code (§5.5.1)
            transport.write(
                close_frame(NORMAL, "") if code == NO_STATUS else close_frame(code, reason)
            )
            self._state = CLOSED
            self._disconnected(code, reason)
        else:
            self._state = CLOSED  # the echo of ours: the closing handshake is done
        transport.close()

    def _close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the transport closes at the client's echo or after
        :data:`CLOSE_TIMEOUT_S`."""
        transport = self.transport
        assert transport is not None
        if self._state != OPEN:
            return
        self._state = CLOSING
        self._leave_keepalive()
        self._disconnected(code, reason)
        if transport.is_closing():
            return
        transport.write(close_frame(code, reason))
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()  # to read the echo
        loop = asyncio.get_running_loop()
        self._close_timer = loop.call_later(CLOSE_TIMEOUT_S, transport.close)

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection (§7.1.7): a close frame saying why, then the TCP close."""
        transport = self.transport
        assert transport is not None
        if self._state in (OPEN, CLOSING) and not transport.is_closing():
            transport.write(close_frame(code, reason))
        self._state = CLOSED
        self._disconnected(code, reason)
        transport.close()

    def _deliver(self, event: Message) -> None:
        if self._inbox is None:
            self._inbox = [event]
        else:
            self._inbox.append(event)
        _wake(self._receiver)

    def _disconnected(self, code: int, reason: str) -> None:
        """Tell the application the connection ended (once; a later receive repeats it)."""
        if self._closed_with is None:
            self._closed_with = (code, reason)
            self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason})

    def _leave_keepalive(self) -> None:
        if self._slot >= 0:
            self._srv.keepalive.leave(self, self._slot)
            self._slot = -1

    # -- keepalive and shutdown ------------------------------------------------------------------
    def keepalive(self) -> None:
        """The shared timer's tick: close a connection that did not answer the last ping
        (``1011``), ping the others."""
        if self._state != OPEN:
            return
        if self._pong_due:
            self._close(INTERNAL_ERROR, "keepalive ping timeout")
            return
        self._pong_due = True
        assert self.transport is not None
        self.transport.write(frame(PING, b""))

    def shutdown(self) -> None:
        """uvicorn's shutdown: ``1012`` (service restart) to an open connection, then close."""
        transport = self.transport
        if transport is None:
            return
        if self._state in (REQUEST, HANDSHAKE):
            self._refuse(SERVER_ERROR)
        elif self._state == OPEN:
            transport.write(close_frame(RESTART))
            self._state = CLOSED
            self._disconnected(RESTART, "")
        transport.close()


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)
