"""Test helpers. No sleeps decide a verdict: ``eventually`` polls a condition up to a deadline
that only bounds how long a broken build takes to fail."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

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
