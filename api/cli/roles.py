"""The roles: ``serve`` (all of them in one process), ``api``, ``worker``, ``projector`` and
``scheduler``, each running until SIGTERM or SIGINT (``archiver``: api.cli.archive).

A single role needs a real Redis (``CLIPSTREAM_REDIS_URL``); only ``serve`` can share the
embedded in-memory store between its roles, and on it prints a demo account to start with.
"""

from __future__ import annotations

import argparse
import functools
import gc
import logging
from dataclasses import replace
from typing import Any

import anyio

from api.cli.archive import archiver_role
from api.cli.redact import redact_tokens_in_server_logs, safe_url
from api.cli.runner import Subcommands, add_metrics_arguments, run, run_role, with_metrics
from api.realtime.websocket import WebSocketProtocol
from engine.connection import ExposedStore
from engine.errors import ConfigError
from engine.runtime import Runtime
from engine.settings import Settings

log = logging.getLogger("clipstream")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
REALTIME_MAX_INBOUND = 64 * 1024  # bytes of one message a WebSocket client may send
# The realtime feed's WebSocket implementation: our own (api.realtime.websocket), whose
# connections cost a fraction of uvicorn's three (bench.realtime_memory;
# bench/results/realtime-*-memory.md).
REALTIME_WS = WebSocketProtocol
FREEZE_EVERY = 500  # realtime subscriptions between two freezes of the collector (FeedHub)


def add_parsers(sub: Subcommands) -> None:
    """Add the role commands to the ``clipstream`` parser."""

    def with_address(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--host", default=DEFAULT_HOST, help=f"bind address ({DEFAULT_HOST})")
        p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
        return p

    serve = with_address(
        sub.add_parser(
            "serve", help="API, worker, projector, scheduler and archiver in one process"
        )
    )
    serve.add_argument(
        "--store-port",
        type=int,
        default=0,
        help="on the embedded store: the local port that serves it over the Redis protocol to the "
        "operator commands (default 0: a free port, printed at start; -1: none)",
    )
    serve.set_defaults(handler=_serve_command)
    with_address(
        sub.add_parser("api", help="the HTTP API only (needs CLIPSTREAM_REDIS_URL)")
    ).set_defaults(handler=_api_command)
    worker = sub.add_parser("worker", help="run executions (needs CLIPSTREAM_REDIS_URL)")
    worker.add_argument("--id", dest="worker_id", help="consumer name (default: host-pid-random)")
    add_metrics_arguments(worker)
    worker.set_defaults(handler=_worker_command)
    projector = sub.add_parser(
        "projector", help="fold the logs into views (needs CLIPSTREAM_REDIS_URL)"
    )
    add_metrics_arguments(projector)
    projector.set_defaults(handler=_projector_command)
    scheduler = sub.add_parser(
        "scheduler",
        help="fire due schedules, each tick once however many run (needs CLIPSTREAM_REDIS_URL)",
    )
    add_metrics_arguments(scheduler)
    scheduler.set_defaults(handler=_scheduler_command)


# -- the commands: each runs its role until it is asked to stop ----------------------------------


def _serve_command(settings: Settings, args: argparse.Namespace) -> int:
    if settings.embedded and settings.archive_url is None:
        # The embedded store keeps its archive in memory too: bounded Redis, same process.
        settings = replace(settings, archive_url="memory://")
    if not -1 <= args.store_port <= 65_535:
        raise ConfigError(f"--store-port {args.store_port}: expected a port, 0 (any) or -1 (none)")
    run(_serve_all, settings, args.host, args.port, args.store_port)
    return 0


def _api_command(settings: Settings, args: argparse.Namespace) -> int:
    run(_run_api, settings, args.host, args.port)
    return 0


def _worker_command(settings: Settings, args: argparse.Namespace) -> int:
    role = functools.partial(_worker_role, worker_id=args.worker_id)
    run(run_role, settings, with_metrics(role, args))
    return 0


def _projector_command(settings: Settings, args: argparse.Namespace) -> int:
    run(run_role, settings, with_metrics(_projector_role, args))
    return 0


def _scheduler_command(settings: Settings, args: argparse.Namespace) -> int:
    run(run_role, settings, with_metrics(_scheduler_role, args))
    return 0


# -- the roles -----------------------------------------------------------------------------------


async def _worker_role(runtime: Runtime, stop: anyio.Event, worker_id: str | None = None) -> None:
    from engine.providers import registry
    from engine.run.worker import Worker

    worker = Worker(runtime, worker_id=worker_id)
    log.info("worker %s started on %d partitions", worker.worker_id, runtime.store.keys.partitions)
    try:
        await worker.run(stop)
    finally:
        await registry.current().aclose()  # the HTTP providers' connection pools


async def _projector_role(runtime: Runtime, stop: anyio.Event) -> None:
    from projections.projector import Projector

    log.info("projector started")
    await Projector(runtime).run(stop)


async def _scheduler_role(runtime: Runtime, stop: anyio.Event) -> None:
    from engine.schedules.scheduler import Scheduler

    scheduler = Scheduler(runtime)
    log.info(
        "scheduler %s started (a pass every %d ms)",
        scheduler.scheduler_id,
        runtime.settings.scheduler_interval_ms,
    )
    await scheduler.run(stop)


def _uvicorn_server(runtime: Runtime, host: str, port: int) -> Any:
    import uvicorn

    from api.app import create_app

    # The client address the rate limits count by: the TCP peer, or, behind the proxies
    # CLIPSTREAM_FORWARDED_ALLOW_IPS names (and only them), the address their X-Forwarded-For gives.
    forwarded = runtime.settings.forwarded_allow_ips
    config = uvicorn.Config(
        create_app(runtime),
        host=host,
        port=port,
        log_level="info",
        proxy_headers=forwarded is not None,
        forwarded_allow_ips=forwarded or "",
        server_header=False,
        # A line per request costs the process a formatted record and a write to its output,
        # about a tenth of what a 202 costs it; HTTP_REQUESTS counts the requests either way.
        access_log=runtime.settings.access_log,
        # The realtime feed's sockets (docs/operations.md, "Realtime"): our own WebSocket
        # protocol (api.realtime.websocket: a slotted object per connection, no extensions, so no
        # per-message deflate), and small inbound messages (clients send nothing but control
        # frames).
        ws=REALTIME_WS,
        ws_max_size=REALTIME_MAX_INBOUND,
    )
    server = uvicorn.Server(config)
    return server


async def _serve_api(runtime: Runtime, host: str, port: int) -> None:
    server = _uvicorn_server(runtime, host, port)
    redact_tokens_in_server_logs()
    # What start-up made (modules, the app) lives as long as the process: out of the collector's
    # way, so a full collection walks only what connections and requests made.
    gc.freeze()
    server.config.app.state.feed_hub.freeze_every = FREEZE_EVERY
    await server.serve()


async def _run_api(settings: Settings, host: str, port: int) -> None:
    runtime = await Runtime.open(settings)
    try:
        runtime.require_secrets()  # no API without an admin token and a JWT secret
        await _serve_api(runtime, host, port)
    finally:
        await runtime.close()


async def _serve_all(settings: Settings, host: str, port: int, store_port: int = -1) -> None:
    """API, worker, projector, scheduler and archiver in one process, sharing one store (on the
    embedded store, served on ``store_port`` too unless it is -1)."""
    runtime = await Runtime.open(settings)
    stop = anyio.Event()
    exposed = None
    try:
        runtime.require_secrets()  # no API without an admin token and a JWT secret
        if settings.embedded and store_port >= 0:
            exposed = ExposedStore(runtime.redis, "127.0.0.1", store_port)
        await _print_banner(runtime, host, port, exposed)
        async with anyio.create_task_group() as tg:
            tg.start_soon(_worker_role, runtime, stop)
            tg.start_soon(_projector_role, runtime, stop)
            tg.start_soon(_scheduler_role, runtime, stop)
            tg.start_soon(archiver_role, runtime, stop)
            # uvicorn handles SIGINT/SIGTERM itself; when it returns, the other roles stop.
            await _serve_api(runtime, host, port)
            stop.set()
    finally:
        if exposed is not None:
            exposed.close()
        await runtime.close()


async def _print_banner(
    runtime: Runtime, host: str, port: int, exposed: ExposedStore | None = None
) -> None:
    from api.auth import mint_session_token
    from engine.money.accounts import create_account

    settings = runtime.settings
    base = f"http://{host}:{port}"
    lines = ["", "clipstream is starting"]
    if settings.embedded:
        lines.append(
            "  store:        EMBEDDED in-memory store - all data lives in this process and is "
            "lost when it stops (set CLIPSTREAM_REDIS_URL to use Redis)"
        )
    else:
        lines.append(f"  store:        {safe_url(settings.redis_url or '')}")
    lines.append(f"  archive:      {_archive_line(runtime)}")
    if exposed is not None:
        lines.append(
            f"  store port:   {exposed.url} (the embedded store over the Redis protocol, "
            "for the operator commands; this machine only, no password)"
        )
    lines.append(f"  api:          {base}")
    lines.append(f"  dashboard:    {base}/ (sign in with a session JWT)")
    lines.append(f"  console:      {base}/admin/console (sign in with the admin token)")
    if runtime.generated_admin_token is not None:  # only the one this process made, once
        lines.append(f"  admin token:  {runtime.generated_admin_token}")
    if settings.embedded:
        account, api_key = await create_account(runtime, name="demo", coins_micro=100_000_000)
        token = mint_session_token(runtime, account.account_id)
        lines += [
            f"  demo account: {account.account_id} (100 coins)",
            f"  api key:      {api_key}",
            f"  session JWT:  {token}",
            "",
            "  try:",
            f"    export CS={base} KEY={api_key}",
            '    curl -s -X POST $CS/v1/items -H "Authorization: Bearer $KEY" \\',
            '         --json \'{"source": "https://www.youtube.com/watch?v=dQw4w9WgXcQ"}\'',
        ]
    if exposed is not None:
        export = f"export CLIPSTREAM_REDIS_URL={exposed.url}"
        if runtime.generated_jwt_secret is not None:  # `accounts token` signs with it
            export += f" CLIPSTREAM_JWT_SECRET={runtime.generated_jwt_secret}"
        lines += [
            "",
            "  operator commands (status, tail, history, replay, dead-letters, accounts) in",
            "  another terminal:",
            f"    {export}",
            "    clipstream status",
        ]
    print("\n".join(lines) + "\n", flush=True)


def _archive_line(runtime: Runtime) -> str:
    """Where the archive tier is, for the banner."""
    archive, hot = runtime.archive, runtime.settings.hot_seconds
    if archive is None:
        return (
            "NONE - nothing replay needs is ever trimmed, so Redis grows without bound "
            "(set CLIPSTREAM_ARCHIVE_URL to file:///dir or s3://bucket/prefix)"
        )
    if archive.url == "memory://":
        return f"in this process's memory (lost when it stops); Redis keeps the last {hot}s"
    return f"{archive.url}; Redis keeps the last {hot}s"
