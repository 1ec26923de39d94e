"""Backoff bounds, jitter and the retryable classes of engine.tools.retry."""

from __future__ import annotations

import random

import pytest

from engine.errors import ToolError
from engine.tools.retry import NON_RETRYABLE_CODES, RetryPolicy, is_retryable


def _retryable(code: str = "provider_unavailable") -> ToolError:
    return ToolError(code, "boom", retryable=True)


def test_no_jitter_grows_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(base_ms=100, max_ms=1_000, multiplier=2.0, jitter="none")
    rng = random.Random(1)
    assert [policy.delay_ms(a, rng) for a in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]


def test_huge_attempts_stay_capped() -> None:
    policy = RetryPolicy(base_ms=100, max_ms=5_000, multiplier=10.0, jitter="none")
    assert policy.delay_ms(10_000, random.Random(0)) == 5_000


@pytest.mark.parametrize("attempt", [1, 2, 3, 8])
def test_full_jitter_stays_within_zero_and_the_capped_delay(attempt: int) -> None:
    policy = RetryPolicy(base_ms=100, max_ms=1_000, jitter="full")
    ceiling = min(1_000, 100 * 2 ** (attempt - 1))
    rng = random.Random(attempt)
    delays = [policy.delay_ms(attempt, rng) for _ in range(500)]
    assert all(0 <= d <= ceiling for d in delays)
    # Jitter spreads the retries: not all at the same instant, and over most of the range.
    assert len(set(delays)) > 10
    assert max(delays) - min(delays) > ceiling / 2


def test_equal_jitter_never_goes_below_half() -> None:
    policy = RetryPolicy(base_ms=400, max_ms=400, jitter="equal")
    rng = random.Random(7)
    delays = [policy.delay_ms(3, rng) for _ in range(500)]
    assert all(200 <= d <= 400 for d in delays)
    assert len(set(delays)) > 10


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy()
    first = [policy.delay_ms(a, random.Random(42)) for a in range(1, 5)]
    again = [policy.delay_ms(a, random.Random(42)) for a in range(1, 5)]
    assert first == again


def test_a_longer_retry_after_wins_and_a_shorter_one_does_not() -> None:
    policy = RetryPolicy(base_ms=100, max_ms=100, jitter="none")
    rng = random.Random(0)
    assert policy.delay_ms(1, rng, retry_after_ms=5_000) == 5_000
    assert policy.delay_ms(1, rng, retry_after_ms=10) == 100


def test_should_retry_counts_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(_retryable(), 1)
    assert policy.should_retry(_retryable(), 2)
    assert not policy.should_retry(_retryable(), 3)
    assert not RetryPolicy(max_attempts=1).should_retry(_retryable(), 1)


def test_non_retryable_errors_are_never_retried() -> None:
    policy = RetryPolicy(max_attempts=10)
    assert not policy.should_retry(ToolError("x", "no", retryable=False), 1)
    for code in NON_RETRYABLE_CODES:
        # Even when a provider marks them retryable, these classes cannot be fixed by retrying.
        assert not is_retryable(_retryable(code))
        assert not policy.should_retry(_retryable(code), 1)
    assert is_retryable(_retryable("timeout"))


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"base_ms": -1}, {"base_ms": 10, "max_ms": 5}, {"multiplier": 0.5}],
)
def test_invalid_policies_are_refused(kwargs: dict[str, int | float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
