"""One error tree for the engine.

    EngineError
    ├── ConfigError            a setting is missing or malformed (raised at start)
    ├── StoreError             Redis failed or answered something we cannot use
    │   └── StoreUnavailable   Redis could not be reached, or durability (WAIT) was not met
    ├── ArchiveError           the archive tier (engine.archive) failed or holds something wrong
    │   ├── ArchiveUnavailable the archive store could not be read or written (S3 errors, a full
    │   │                      disk): archiving and trimming wait, nothing is lost
    │   └── ArchiveCorrupt     an object does not match its checksum or the manifest, or two
    │                          archivers wrote different bytes under one name
    ├── ConcurrencyConflict    an expected-version append found another seq (a stale writer)
    ├── NotFound               no such resource for this owner
    ├── InvalidRequest         input the engine refuses (bad id, unknown tool, …)
    ├── IdempotencyMismatch    an Idempotency-Key reused with another body
    ├── InsufficientBalance    the owner's balance cannot cover a fee or a step's cost
    │   └── BalanceRefused     an append's money movement was refused (nothing written)
    └── ToolError              a tool or provider failed; carries code and retryable

Redis errors are translated at the store boundary; the API maps each class to one HTTP status.
"""

from __future__ import annotations

from engine import meters


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "internal"


class ConfigError(EngineError):
    """A CLIPSTREAM_* setting is invalid; raised once, at start."""

    code = "invalid_config"


class StoreError(EngineError):
    """Redis failed or answered in a way the store cannot use."""

    code = "internal"


class StoreUnavailable(StoreError):
    """Redis is unreachable, or the configured durability could not be confirmed."""

    code = "unavailable"

    def __init__(self, *args: object) -> None:
        super().__init__(*args)
        # Raised only where the store translates a Redis failure: counting here counts each one.
        meters.REDIS_ERRORS.inc()


class ArchiveError(EngineError):
    """The archive tier failed or holds something it should not."""

    code = "internal"


class ArchiveUnavailable(ArchiveError):
    """The archive store could not be read or written (network, credentials, a full disk)."""

    code = "unavailable"


class ArchiveCorrupt(ArchiveError):
    """An archived object does not match its checksum or the manifest, or a name already holds
    other bytes than the ones about to be written there (two writers disagreeing)."""


class ConcurrencyConflict(EngineError):
    """The execution's current seq is not the one the writer expected."""

    code = "conflict"

    def __init__(self, execution_id: str, expected: int, actual: int) -> None:
        super().__init__(f"{execution_id}: expected seq {expected}, found {actual}")
        self.execution_id = execution_id
        self.expected = expected
        self.actual = actual


class NotFound(EngineError):
    """No such resource for this owner (another owner's resource looks the same)."""

    code = "not_found"


class StateConflict(EngineError):
    """The resource exists but its state refuses the operation (e.g. a retry of an execution
    that is not dead-lettered)."""

    code = "conflict"


class InvalidRequest(EngineError):
    """The engine refuses this input."""

    code = "invalid_request"


class InvalidTarget(InvalidRequest):
    """The request names a resource of a kind this work cannot run on (a transcript of a
    channel); the API answers 422 ``invalid_target``."""

    code = "invalid_target"


class IdempotencyMismatch(EngineError):
    """An Idempotency-Key was reused with a different request body."""

    code = "conflict"


class InsufficientBalance(EngineError):
    """The balance cannot cover the fee or the estimated cost."""

    code = "insufficient_balance"


class BalanceRefused(InsufficientBalance):
    """An append carried a money movement the owner's balance cannot cover, so nothing of the
    append was written. ``event_index`` is the position of the refused money event in the append,
    ``available`` the balance it met (micro-coins)."""

    def __init__(self, execution_id: str, event_index: int, available: int) -> None:
        super().__init__(
            f"{execution_id}: event {event_index} of the append needs more than the "
            f"{available / 1_000_000:.6f} coins available"
        )
        self.execution_id = execution_id
        self.event_index = event_index
        self.available = available


class ToolError(EngineError):
    """A tool or its provider failed.

    ``retryable`` tells the retry policy whether another attempt may succeed (timeouts, 429, 5xx);
    ``retry_after_ms`` is the provider's own hint, when it gave one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms
