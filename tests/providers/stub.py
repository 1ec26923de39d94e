"""A tiny HTTP/1.1 server on 127.0.0.1 and a free port, for the HTTP providers' tests.

Each test hands it a handler that sees every request (method, path, query, headers, body) and
answers ``(status, headers, body)``; a handler that never returns is a provider that hangs.
Every request is recorded, so a test can assert what was sent (the idempotency key, the key).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import anyio
import anyio.abc
import msgspec


@dataclass
class Request:
    """One request as the stub received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return msgspec.json.decode(self.body)


Answer = tuple[int, dict[str, str], bytes]
Handler = Callable[[Request], Awaitable[Answer]]


def reply(status: int, body: Any = None, **headers: str) -> Answer:
    """An answer with a JSON body (bytes are sent as they are)."""
    data = body if isinstance(body, bytes) else msgspec.json.encode(body if body else {})
    names = {k.replace("_", "-"): v for k, v in headers.items()}
    return status, {"content-type": "application/json", **names}, data


@dataclass
class StubServer:
    handler: Handler
    port: int = 0
    requests: list[Request] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, stream: anyio.abc.SocketStream) -> None:
        async with stream:
            raw = b""
            while b"\r\n\r\n" not in raw:
                chunk = await stream.receive(65536)
                if not chunk:
                    return
                raw += chunk
            head, _, body = raw.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                body += await stream.receive(65536)
            url = urlsplit(target)
            request = Request(method, url.path, dict(parse_qsl(url.query)), headers, body)
            self.requests.append(request)
            status, out_headers, data = await self.handler(request)
            head_lines = [f"HTTP/1.1 {status} STUB", f"content-length: {len(data)}"]
            head_lines += [f"{k}: {v}" for k, v in out_headers.items()]
            head_lines.append("connection: close")
            await stream.send(("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1") + data)


@asynccontextmanager
async def stub_server(handler: Handler) -> AsyncIterator[StubServer]:
    """Serve ``handler`` on a free local port until the block ends."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    server = StubServer(handler, port=listener.extra(anyio.abc.SocketAttribute.local_port))
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server._serve)
        try:
            yield server
        finally:
            tg.cancel_scope.cancel()


def scripted(*answers: Answer | str) -> Handler:
    """A handler answering each request with the next of ``answers`` (the last one repeats);
    the string ``"hang"`` never answers."""
    queue = list(answers)

    async def handle(request: Request) -> Answer:
        answer = queue.pop(0) if len(queue) > 1 else queue[0]
        if answer == "hang":
            await anyio.sleep_forever()
        assert not isinstance(answer, str)
        return answer

    return handle
