"""Prometheus metrics: ``GET /metrics`` on the API (and ``serve``), the same text on
``--metrics-port`` for the worker, projector, scheduler and archiver (docs/metrics.md).

A scrape answers with the process's own meters (engine.meters: counters and histograms the roles
update as they work) followed by the store's figures, read from Redis at that moment
(projections.inspection, engine.archive.report): per partition the queue depth, leases, oldest
pending age, dead letters and projection lag, the live workers, Redis memory and the archive.
Those are the store's, not the process's: every endpoint shows the same values, so dashboards and
alerts take ``max`` over instances, never ``sum``. No label carries an id.

:class:`RequestMeters` is the API's outermost middleware: each request counted by route template
(the Starlette route's path, or ``unmatched``), method and status, and timed to its first byte.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.openapi import doc
from engine import meters
from engine.errors import EngineError
from engine.runtime import Runtime
from projections import inspection

log = logging.getLogger("clipstream.metrics")

UNMATCHED = "unmatched"


# -- the request meters ------------------------------------------------------------------------


class RequestMeters:
    """Counts and times every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = list(routes)
        # The router leaves the matched endpoint in the scope: its template is one lookup.
        self._templates: dict[int, str] = {}
        for route in self.routes:
            if isinstance(route, Route | WebSocketRoute):
                self._templates[id(route.endpoint)] = route.path

    def template(self, scope: Scope) -> str:
        """The route template of ``scope``: the endpoint the router chose, or (for a request
        answered before routing: a rate limit, a body too large) the first route that matches."""
        endpoint = scope.get("endpoint")
        if endpoint is not None and id(endpoint) in self._templates:
            return self._templates[id(endpoint)]
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                if isinstance(route, Mount):
                    return route.path + "/{path}"
                return str(getattr(route, "path", UNMATCHED))
        return UNMATCHED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when nothing was sent (Edge answers 500 then)
        route: str | None = None

        async def timed_send(message: Message) -> None:
            nonlocal status, route
            if message["type"] == "http.response.start":
                status = int(message["status"])
                seconds = time.perf_counter() - started
                route = self.template(scope)
                meters.HTTP_SECONDS.labels(route, scope["method"]).observe(seconds)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = route or self.template(scope)
            meters.HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()


# -- the store's figures, read at scrape time ----------------------------------------------------


class _Families(Collector):
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return iter(self.families)


def _by_partition(name: str, text: str, values: dict[int, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, text, labels=["partition"])
    for p, value in sorted(values.items()):
        family.add_metric([str(p)], value)
    return family


def _single(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


async def store_families(runtime: Runtime) -> list[GaugeMetricFamily]:
    """The store's figures as gauge families (projections.inspection and the archive's gauges)."""
    from engine.archive.report import archive_gauges, archive_status

    parts = await inspection.partitions(runtime)
    live = [w for w in await inspection.workers(runtime, sample=0) if w.live]
    memory = await inspection.redis_memory(runtime)
    families = [
        _by_partition(
            "clipstream_queue_depth",
            "Executions waiting for a lease (the ready lists), per partition.",
            {f.partition: f.queued for f in parts},
        ),
        _by_partition(
            "clipstream_leases",
            "Executions leased by a worker right now, per partition.",
            {f.partition: f.leased for f in parts},
        ),
        _by_partition(
            "clipstream_oldest_pending_age_seconds",
            "Age of the oldest execution waiting for a lease (0: none waiting), per partition.",
            {f.partition: (f.oldest_pending_ms or 0) / 1000 for f in parts},
        ),
        _by_partition(
            "clipstream_dead_letter_entries",
            "Entries in the dead-letter stream, per partition.",
            {f.partition: f.dead_letters for f in parts},
        ),
        _by_partition(
            "clipstream_projection_lag_entries",
            f"Log entries past the live projection's checkpoint (counted up to "
            f"{inspection.LAG_COUNT_CAP}), per partition.",
            {f.partition: f.projection_lag_entries for f in parts},
        ),
        _by_partition(
            "clipstream_projection_lag_seconds",
            "Age of the oldest log entry the live projection has not folded (0: caught up), per "
            "partition.",
            {f.partition: f.projection_lag_ms / 1000 for f in parts},
        ),
        _single(
            "clipstream_workers_live",
            "Workers whose heartbeat is younger than the lease time.",
            len(live),
        ),
    ]
    if memory is not None:
        families += [
            _single("clipstream_redis_memory_used_bytes", "Redis used_memory.", memory.used_bytes),
            _single(
                "clipstream_redis_memory_max_bytes",
                "Redis maxmemory (0: no limit).",
                memory.max_bytes,
            ),
        ]
    gauges = archive_gauges(await archive_status(runtime.store), runtime.archive is not None)
    for name, values in gauges.items():
        text = f"The archive's {name.removeprefix('clipstream_').replace('_', ' ')}."
        if set(values) == {-1}:
            families.append(_single(name, text, values[-1]))
        else:
            families.append(_by_partition(name, text, values))
    return families


async def render(runtime: Runtime, extra: Sequence[GaugeMetricFamily] = ()) -> bytes:
    """The exposition text of a scrape: the process's meters, then the store's figures (left
    out, with ``clipstream_scrape_store_ok 0``, when Redis cannot be read: the process's own
    meters still answer)."""
    families = list(extra)
    try:
        families += await store_families(runtime)
        ok = 1.0
    except EngineError as exc:
        log.warning("metrics: the store's figures could not be read: %s", exc)
        ok = 0.0
    families.append(
        _single("clipstream_scrape_store_ok", "1 when the store's figures were read.", ok)
    )
    store = CollectorRegistry(auto_describe=False)
    store.register(_Families(families))
    return generate_latest(meters.REGISTRY) + generate_latest(store)


# -- GET /metrics --------------------------------------------------------------------------------


@doc(
    summary="Prometheus metrics (text exposition format)",
    response=str,
    tags=["health"],
    media_type="text/plain",
)
async def metrics(request: Request) -> Response:
    """``GET /metrics``: this process's meters and the store's figures, for Prometheus (no auth:
    serve it on the operators' network only)."""
    runtime: Runtime = request.app.state.runtime
    hub = getattr(request.app.state, "feed_hub", None)
    extra = []
    if hub is not None:
        extra.append(
            _single(
                "clipstream_feed_subscribers",
                "Realtime subscriptions (WebSocket and SSE) open in this API process.",
                hub.subscribers,
            )
        )
    body = await render(runtime, extra)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


ROUTES: list[BaseRoute] = [Route("/metrics", metrics, methods=["GET"])]


# -- --metrics-port: the same text from a role that serves no API -------------------------------


def metrics_app(runtime: Runtime) -> Starlette:
    """A Starlette app with only ``GET /metrics`` (and ``/healthz``), for ``--metrics-port``."""

    async def healthz(request: Request) -> Response:
        return Response("ok\n", media_type="text/plain")

    app = Starlette(routes=[*ROUTES, Route("/healthz", healthz, methods=["GET"])])
    app.state.runtime = runtime
    return app


async def serve_metrics(runtime: Runtime, host: str, port: int, stop: anyio.Event) -> None:
    """Serve :func:`metrics_app` on ``host:port`` until ``stop`` is set. The role's own signal
    handling stands: this server installs none."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        metrics_app(runtime), host=host, port=port, log_level="warning", server_header=False
    )
    server = _Server(config)

    async def stop_when_asked() -> None:
        await stop.wait()
        server.should_exit = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_when_asked)
        await server.serve()
        tg.cancel_scope.cancel()
