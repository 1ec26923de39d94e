"""What a tool is: its catalogue entry (id, provider kind, params schema, pricing), its retry
policy and timeout, and ``run``, which the worker calls once per attempt.

A tool reports failure by raising :class:`engine.errors.ToolError`; anything else it raises is a
bug, which the worker records as ``StepFailed`` code ``internal``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import msgspec

from engine.errors import ToolError
from engine.log.events import AnyEvent, StepSpec
from engine.providers import registry
from engine.providers.base import ProviderCall, ProviderKindName
from engine.runtime import Runtime
from engine.settings import Settings
from engine.tools.retry import RetryPolicy

ProviderKind = ProviderKindName
P = TypeVar("P", bound="ToolParams")


class ToolParams(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Params every tool accepts in a workflow step."""

    # A step may ask for a shorter timeout than the tool's own (never a longer one).
    timeout_s: float | None = msgspec.field(default=None)
    # The simulated providers' latency and failure injection for this step (see
    # engine.providers.sim); HTTP providers ignore it.
    sim: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one successful attempt produced. ``blob`` holds a large output (stored once by its
    hash and referenced from StepCompleted); ``output`` is then its small preview."""

    output: dict[str, Any]
    blob: bytes | None = None
    # The blob's sha256 (hex) when the tool hashed it already (its preview names it): the worker
    # then names the blob by it instead of hashing the same bytes again.
    blob_sha256: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost: int = 0
    # Events the step records besides its StepCompleted (a schedule run's RunItemRecorded):
    # appended just before it, in the same atomic append, so they are written exactly once.
    events: tuple[AnyEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Everything one attempt may use. ``load_blob(sha256)`` reads a previous step's blob."""

    execution_id: str
    owner: str
    step_index: int
    attempt: int
    spec: StepSpec
    input: dict[str, Any]
    settings: Settings
    load_blob: Callable[[str], Awaitable[bytes | None]]
    # None: the process's providers (engine.providers.registry.current()).
    providers: registry.Providers | None = None
    # The worker's runtime, for the tools that act on the store (a schedule run's pick step
    # starts executions); None outside a worker.
    runtime: Runtime | None = None

    @property
    def provider_set(self) -> registry.Providers:
        """The providers this attempt calls."""
        return self.providers if self.providers is not None else registry.current()

    @property
    def call(self) -> ProviderCall:
        """This attempt as a provider call: the step's stable key, the attempt, the sim hooks."""
        return ProviderCall(self.idempotency_key, self.attempt, self.sim_overrides)

    def params(self, schema: type[P]) -> P:
        """The step's params as ``schema``; ``invalid_input`` when they do not fit (a workflow
        is checked when saved, but an execution may predate a schema change)."""
        try:
            return msgspec.convert(self.spec.params, schema)
        except msgspec.ValidationError as exc:
            raise ToolError("invalid_input", f"step params: {exc}", retryable=False) from None

    @property
    def idempotency_key(self) -> str:
        """Stable across attempts, so a provider that supports one never bills a retry twice."""
        return f"{self.execution_id}:{self.step_index}"

    @property
    def sim_overrides(self) -> dict[str, Any]:
        """The simulated providers' per-call test hook (see engine.providers.sim)."""
        found = self.input.get("sim", self.spec.params.get("sim"))
        return dict(found) if isinstance(found, dict) else {}


def estimate_params(spec: StepSpec, schema: type[P]) -> P:
    """The step's params for an estimate: the schema's defaults when they do not validate (the
    attempt then fails with ``invalid_input`` before calling any provider)."""
    try:
        return msgspec.convert(spec.params, schema)
    except msgspec.ValidationError:
        return schema()


class Tool(ABC):
    """A step's vocabulary word. Subclasses set the class attributes and implement ``run``."""

    tool_id: ClassVar[str]
    description: ClassVar[str]
    provider_kind: ClassVar[ProviderKind]
    # Further provider kinds a tool may call (a summary fetches a missing transcript).
    also_uses: ClassVar[tuple[ProviderKind, ...]] = ()
    params_schema: ClassVar[type[ToolParams]] = ToolParams
    retry: ClassVar[RetryPolicy] = RetryPolicy()
    timeout_s: ClassVar[float] = 300.0
    # How ``estimate_cost`` makes its estimate, in words (``GET /v1/tools`` shows it): what a
    # step reserves before it starts.
    estimate_note: ClassVar[str] = "0: the tool costs nothing"

    def timeout_for(self, spec: StepSpec) -> float:
        """The tool's timeout, shortened by the step's ``timeout_s`` param when it asks."""
        asked = spec.params.get("timeout_s")
        if isinstance(asked, int | float) and 0 < asked < self.timeout_s:
            return float(asked)
        return self.timeout_s

    @abstractmethod
    def estimate_cost(self, input: dict[str, Any], spec: StepSpec) -> int:
        """An estimate of one attempt's provider cost in micro-coins, from the step's input and
        its spec (prompt and params), within 2x of it in the normal case: the worker reserves it
        before the attempt starts and settles the actual cost after, charging past it up to the
        balance (engine.money.billing)."""

    @abstractmethod
    async def run(self, ctx: ToolContext) -> StepResult:
        """Run one attempt; raise ToolError on failure."""
