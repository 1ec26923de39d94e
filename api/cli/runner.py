"""How the ``clipstream`` command runs its coroutines: on uvloop when it is installed, and until
SIGTERM or SIGINT asks the long-running ones to stop."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias, TypeVar

import anyio

from engine.runtime import Runtime
from engine.settings import Settings

log = logging.getLogger("clipstream")

T = TypeVar("T")

# What a command does once its arguments are parsed and the settings read: its exit code.
Handler = Callable[[Settings, argparse.Namespace], int]
# The ``sub`` of ``ArgumentParser.add_subparsers()``, where each module adds its commands
# (argparse names no public type for it).
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
# A role: runs on an open runtime until ``stop`` is set.
Role: TypeAlias = Callable[[Runtime, anyio.Event], Awaitable[None]]


def run(func: Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run a command's main coroutine, on uvloop when it is installed (it comes with
    uvicorn[standard])."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return anyio.run(func, *args)
    return anyio.run(func, *args, backend_options={"use_uvloop": True})


async def until_signal(stop: anyio.Event) -> None:
    """Set ``stop`` at the first SIGTERM or SIGINT (a graceful stop: the roles finish their
    current work and return)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s: stopping gracefully", signal.Signals(signum).name)
            stop.set()
            return


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port`` and ``--metrics-host`` on a role's parser (see :func:`with_metrics`)."""
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default: none)",
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics endpoint binds to (127.0.0.1)",
    )


def with_metrics(role: Role, args: argparse.Namespace) -> Role:
    """``role``, serving Prometheus metrics beside it when ``--metrics-port`` was given (the
    endpoint stops with the role)."""
    port = getattr(args, "metrics_port", None)
    if port is None:
        return role

    async def metered(runtime: Runtime, stop: anyio.Event) -> None:
        from api.metrics import serve_metrics

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve_metrics, runtime, args.metrics_host, port, stop)
            try:
                await role(runtime, stop)
            finally:
                stop.set()

    return metered


def lower_priority(nice: int) -> int:
    """Lower this process's CPU priority to ``nice`` unless it runs at that or lower already
    (started under ``nice``, a unit's ``Nice=``); never raise it. The nice it runs at now.

    A background role (worker, projector, scheduler, archiver) does it at start, before its
    first thread, so every thread inherits it: where it shares cores with an API process and
    Redis (one box, one cgroup), they get a core first when all want one, and a request's
    202 does not wait behind a batch being folded or driven. Alone on its cores (its own
    container) it changes nothing. 0 leaves the priority as started.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError as exc:  # a sandbox that forbids it: run as started, say so
            log.warning("could not lower the CPU priority to nice %d: %s", nice, exc)
    return os.getpriority(os.PRIO_PROCESS, 0)


async def run_role(settings: Settings, role: Role) -> None:
    """Open a runtime and run one background role on it, at nice ``background_nice``
    (:func:`lower_priority`), until SIGTERM or SIGINT."""
    lower_priority(settings.background_nice)
    runtime = await Runtime.open(settings)
    stop = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(until_signal, stop)
            await role(runtime, stop)
            tg.cancel_scope.cancel()
    finally:
        await runtime.close()
