"""Retry policy: exponential backoff with jitter and the error classes that are never retried.

Pure: no clock, no I/O. Randomness comes from the ``random.Random`` the caller passes, so a test
can seed it and the worker can share one per process.

    delay(attempt) = min(max_ms, base_ms * multiplier ** (attempt - 1))
    full jitter:   uniform(0, delay)            (spreads a thundering herd the most)
    equal jitter:  delay / 2 + uniform(0, delay / 2)   (never retries almost at once)
    none:          delay

A provider's own ``retry_after_ms`` (HTTP 429 ``Retry-After``) wins when it is longer.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from engine.errors import ToolError

Jitter = Literal["full", "equal", "none"]

# Error codes no retry can fix: the input or the request itself is wrong, or someone decided.
NON_RETRYABLE_CODES = frozenset(
    {
        "cancelled",
        "invalid_input",
        "invalid_target",
        "insufficient_balance",
        "not_found",
        "provider_rejected",
        "unknown_tool",
    }
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a tool's failed attempts are retried.

    ``max_attempts`` counts every attempt, the first included (1 = never retry).
    """

    max_attempts: int = 3
    base_ms: int = 250
    max_ms: int = 30_000
    multiplier: float = 2.0
    jitter: Jitter = "full"

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base_ms < 0 or self.max_ms < self.base_ms:
            raise ValueError("need 0 <= base_ms <= max_ms")
        if self.multiplier < 1.0:
            raise ValueError("multiplier must be at least 1")

    def delay_ms(
        self, attempt: int, rng: random.Random, *, retry_after_ms: int | None = None
    ) -> int:
        """How long to wait after failed ``attempt`` (1-based) before the next one."""
        exponent = max(attempt, 1) - 1
        # Cap before multiplying out: multiplier ** 1000 would overflow a float.
        ceiling = float(self.max_ms)
        raw = float(self.base_ms)
        for _ in range(exponent):
            raw *= self.multiplier
            if raw >= ceiling:
                raw = ceiling
                break
        capped = min(raw, ceiling)
        if self.jitter == "full":
            delay = rng.uniform(0.0, capped)
        elif self.jitter == "equal":
            delay = capped / 2 + rng.uniform(0.0, capped / 2)
        else:
            delay = capped
        wait = round(delay)
        if retry_after_ms is not None and retry_after_ms > wait:
            return retry_after_ms
        return wait

    def should_retry(self, error: ToolError, attempt: int) -> bool:
        """True when failed ``attempt`` may be followed by another one."""
        return is_retryable(error) and attempt < self.max_attempts


def is_retryable(error: ToolError) -> bool:
    """The error says another attempt may succeed and its class is not a hopeless one."""
    return error.retryable and error.code not in NON_RETRYABLE_CODES


# A policy for tools that must never be retried (their side effects are not idempotent).
NO_RETRY = RetryPolicy(max_attempts=1)
