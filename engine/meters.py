"""The process's Prometheus meters: what the roles count on their hot paths (docs/metrics.md).

One registry per process (docs/decisions/0004): every role of a process updates the same
:data:`REGISTRY`, which that process serves (the API at ``GET /metrics``, the other roles on
``--metrics-port``, ``serve`` on its one port). Updating a meter is a dictionary lookup and an
addition under a lock, never a Redis round trip; the figures that live in Redis (queue depth,
leases, projection lag, the archive, Redis memory) are read when the endpoint is scraped
(api.metrics), not here.

Labels are few and bounded: a route template, a status, an execution kind, an error code, a tool
id, a charge kind. Never an execution, account or request id (a test checks it).

This module imports nothing of the engine, so every room may call it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


class Labelled(Generic[M]):
    """A labelled metric whose children are looked up in a plain dict: prometheus_client's own
    ``labels()`` checks and converts its arguments on every call (about five times the cost of
    the addition itself); the label sets here are few and fixed, so each child is made once."""

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


# No ``_created`` series: a counter's start time is the process's, which Prometheus has already.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry(auto_describe=True)

# -- the API's edge ------------------------------------------------------------------------------

HTTP_REQUESTS = Labelled(
    Counter(
        "clipstream_http_requests",
        "HTTP requests answered, by route template, method and status code.",
        ["route", "method", "status"],
        registry=REGISTRY,
    )
)
HTTP_SECONDS = Labelled(
    Histogram(
        "clipstream_http_request_duration_seconds",
        "Time from a request's arrival to its response's first byte, by route template and method.",
        ["route", "method"],
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        registry=REGISTRY,
    )
)
FEED_SLOW_CLOSES = Counter(
    "clipstream_feed_slow_client_closes",
    "Realtime subscriptions closed because the client fell a whole buffer behind.",
    registry=REGISTRY,
)

# -- executions ----------------------------------------------------------------------------------

EXECUTIONS_ACCEPTED = Labelled(
    Counter(
        "clipstream_executions_accepted",
        "Executions appended by this process (a fresh ExecutionRequested, not an idempotent "
        "replay), by kind.",
        ["kind"],
        registry=REGISTRY,
    )
)
EXECUTIONS_ENDED = Labelled(
    Counter(
        "clipstream_executions_ended",
        "Executions this process ended (its terminal append), by kind, status (done, error) and "
        "error code (none when done).",
        ["kind", "status", "code"],
        registry=REGISTRY,
    )
)
STEP_SECONDS = Labelled(
    Histogram(
        "clipstream_step_duration_seconds",
        "One attempt of a step, from its tool's call to its answer, by tool and outcome "
        "(completed, or the error code).",
        ["tool", "outcome"],
        buckets=(
            0.005,
            0.01,
            0.025,
            0.05,
            0.1,
            0.25,
            0.5,
            1.0,
            2.5,
            5.0,
            10.0,
            30.0,
            60.0,
            120.0,
            300.0,
        ),
        registry=REGISTRY,
    )
)
STEP_COST = Labelled(
    Counter(
        "clipstream_step_cost_coins",
        "Provider cost of the completed step attempts, in coins, by tool.",
        ["tool"],
        registry=REGISTRY,
    )
)
TAKEOVERS = Counter(
    "clipstream_lease_takeovers",
    "Leases of executions taken over from a worker that stopped renewing them.",
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "clipstream_dead_letters",
    "Executions moved to the dead letters (poison work: delivered too often, or undecodable).",
    registry=REGISTRY,
)
SCHEDULE_TICKS = Labelled(
    Counter(
        "clipstream_schedule_ticks",
        "Due schedule ticks fired, by outcome (dispatched, already_running, refused).",
        ["outcome"],
        registry=REGISTRY,
    )
)
ARCHIVE_SEGMENTS = Labelled(
    Counter(
        "clipstream_archive_segments_written",
        "Segments this process wrote into the archive, by what they hold (log, ledger).",
        ["content"],
        registry=REGISTRY,
    )
)

# -- money and the store -------------------------------------------------------------------------

COINS_CHARGED = Labelled(
    Counter(
        "clipstream_coins_charged",
        "Coins taken from balances, by kind of charge (fee: an execution's flat fee; provider: a "
        "step's cost; read: a read's fee, when admitted).",
        ["charge"],
        registry=REGISTRY,
    )
)
COINS_REFUNDED = Labelled(
    Counter(
        "clipstream_coins_refunded",
        "Coins given back, by kind of charge (read: a read that answered an error).",
        ["charge"],
        registry=REGISTRY,
    )
)
REDIS_ERRORS = Counter(
    "clipstream_redis_errors",
    "Redis failures met at the store boundary (each StoreUnavailable raised).",
    registry=REGISTRY,
)

# -- the projector -------------------------------------------------------------------------------

PROJECTOR_VIEWS = Labelled(
    Counter(
        "clipstream_projector_views",
        "Views the projector's batches started from, by source: memory (the running executions'"
        " views it committed, projections.view_cache) or redis (read back; a new execution's too).",
        ["source"],
        registry=REGISTRY,
    )
)

MICRO = 1_000_000


def coins(micro: int) -> float:
    """Micro-coins as coins, for the coin counters."""
    return micro / MICRO


def appended(kind: str, events: Iterable[object]) -> None:
    """Count what a drive's append just made durable for an execution of ``kind``: the
    provider charges (a step's settlement, or an older log's CostCharged) and the execution's
    end.

    The events are told apart by their type's name (an event's tag, never renamed: the evolution
    rules of engine.log.events), as this module sits below the event catalogue."""
    for event in events:
        name = type(event).__name__
        if name == "CostCharged":  # an older worker's charge
            COINS_CHARGED.labels("provider").inc(coins(getattr(event, "amount", 0)))
        elif name in ("StepCompleted", "StepFailed"):  # a settlement's charge rides on its step
            charged = getattr(getattr(event, "settlement", None), "charged", 0)
            if charged:
                COINS_CHARGED.labels("provider").inc(coins(charged))
        elif name == "ExecutionCompleted":
            EXECUTIONS_ENDED.labels(kind, "done", "none").inc()
        elif name == "ExecutionCancelled":
            EXECUTIONS_ENDED.labels(kind, "error", "cancelled").inc()
        elif name == "ExecutionFailed":
            EXECUTIONS_ENDED.labels(kind, "error", getattr(event, "code", "internal")).inc()
