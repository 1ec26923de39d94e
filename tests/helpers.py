"""Test helpers. No sleeps decide a verdict: ``eventually`` polls a condition up to a deadline
that only bounds how long a broken build takes to fail."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import anyio
import uvicorn

from engine.settings import coins_to_micro

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    until: Callable[[T], bool] = bool,
    deadline_s: float = 30.0,
    interval_s: float = 0.02,
) -> T:
    """Call ``probe`` until ``until(result)`` holds; AssertionError with the last result if the
    deadline passes first."""
    end = time.monotonic() + deadline_s
    while True:
        result = await probe()
        if until(result):
            return result
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {deadline_s}s; last: {result!r}")
        await anyio.sleep(interval_s)


def micro(coins: object) -> int:
    """A JSON number of coins as exact micro-coins (money is compared exactly, never with a
    tolerance: the API's coins are micro-coins / 10**6, whose shortest form has 6 decimals)."""
    assert isinstance(coins, int | float), coins
    return coins_to_micro(repr(coins))


@asynccontextmanager
async def uvicorn_serving(
    config: uvicorn.Config, *, sndbuf: int | None = None
) -> AsyncIterator[tuple[uvicorn.Server, int]]:
    """uvicorn serving ``config`` in this event loop on a free loopback port until the block
    ends: the server and its port. ``sndbuf``: the listening socket's send buffer, which every
    accepted connection inherits."""
    listener = socket.socket()
    if sndbuf is not None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(config)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [listener])
            await eventually(lambda: holds(server.started))
            try:
                yield server, listener.getsockname()[1]
            finally:
                server.should_exit = True
    finally:
        listener.close()


async def holds(value: bool) -> bool:
    """``value``, awaitable: :func:`eventually`'s probe for a condition read without I/O."""
    return value
