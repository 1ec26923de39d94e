"""The operator commands: ``history`` (one execution's events), ``tail`` (the logs live),
``dead-letters`` (list, and retry: engine.run.revive) and ``replay`` (rebuild the projections
into a new version, compare, switch); ``status`` is api.cli.status.

Each opens its own runtime on the configured Redis, prints, and returns its exit code.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
from collections.abc import Sequence

import anyio

from api.cli.runner import Subcommands, run, until_signal
from engine.errors import ConfigError
from engine.runtime import Runtime
from engine.settings import Settings


def add_parsers(sub: Subcommands) -> None:
    """Add the operator commands to the ``clipstream`` parser."""
    history = sub.add_parser("history", help="print one execution's events as JSON lines")
    history.add_argument("execution_id")
    history.set_defaults(handler=_history_command)
    tail = sub.add_parser("tail", help="follow the partition logs live")
    tail.add_argument(
        "-p",
        "--partition",
        type=int,
        action="append",
        dest="partitions",
        help="only this partition (repeatable)",
    )
    tail.add_argument("--from-start", action="store_true", help="print the whole log first")
    tail.set_defaults(handler=_tail_command)
    dead = sub.add_parser(
        "dead-letters", help="list dead-lettered entries (the default), or retry them"
    )
    dead.set_defaults(handler=_dead_letters_command)
    dead_sub = dead.add_subparsers(dest="dead_action", metavar="{list,retry}")
    dead_sub.add_parser("list", help="list dead-lettered entries").set_defaults(
        handler=_dead_letters_command
    )
    retry = dead_sub.add_parser(
        "retry",
        help="send a dead-lettered execution back to the workers: it resumes from its first "
        "step without a StepCompleted",
    )
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("execution_id", nargs="?", help="the dead-lettered execution (exc_p…)")
    which.add_argument("--all", action="store_true", help="every dead-lettered execution")
    retry.add_argument(
        "--by",
        default=None,
        help="who asks, recorded in the ExecutionRetried event (default: cli:USER@HOST)",
    )
    retry.set_defaults(handler=_retry_command)
    replay = sub.add_parser(
        "replay", help="rebuild every projection into a new version and compare with the live one"
    )
    replay.add_argument("--switch", action="store_true", help="make the rebuilt version live")
    replay.add_argument(
        "--drop-previous",
        action="store_true",
        help="with --switch: delete the version that was live before",
    )
    replay.add_argument(
        "--processes",
        type=_positive,
        default=os.cpu_count() or 1,
        help="split the partitions among this many processes (default: one per core; one when "
        "this command runs its own embedded store or an archive in memory, which other processes "
        "cannot reach; against serve's store port, as against any Redis, one per core)",
    )
    replay.set_defaults(handler=_replay_command)


# -- the commands: parsed arguments in, exit code out ---------------------------------------------


def _history_command(settings: Settings, args: argparse.Namespace) -> int:
    return run(_history, settings, args.execution_id)


def _tail_command(settings: Settings, args: argparse.Namespace) -> int:
    return run(_tail, settings, args.partitions, args.from_start)


def _dead_letters_command(settings: Settings, args: argparse.Namespace) -> int:
    return run(_dead_letters, settings)


def _retry_command(settings: Settings, args: argparse.Namespace) -> int:
    by = args.by or f"cli:{getpass.getuser()}@{socket.gethostname()}"
    return run(_retry, settings, None if args.all else args.execution_id, by)


def _replay_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.drop_previous and not args.switch:
        raise ConfigError("--drop-previous needs --switch: the live version is never dropped")
    return run(_replay, settings, args.switch, args.drop_previous, args.processes)


# -- what they do --------------------------------------------------------------------------------


async def _history(settings: Settings, execution_id: str) -> int:
    from engine.archive import reader
    from engine.log import codec
    from engine.log.ids import is_id

    if not is_id(execution_id, "exc"):
        print(f"not an execution id: {execution_id}", file=sys.stderr)
        return 2
    runtime = await Runtime.open(settings)
    try:
        events = await reader.execution_history(runtime.store, runtime.archive, execution_id)
    finally:
        await runtime.close()
    if not events:
        print(f"{execution_id}: no events (unknown, or expired and not archived)", file=sys.stderr)
        return 1
    for event in events:
        print(codec.encode(event).decode())
    return 0


async def _tail(settings: Settings, partitions: Sequence[int] | None, from_start: bool) -> int:
    runtime = await Runtime.open(settings)
    store = runtime.store
    chosen = list(partitions) if partitions else list(store.partitions)
    cursors: dict[int, str] = {}
    for p in chosen:
        if from_start:
            cursors[p] = "0-0"
        else:
            last = await store.redis.xrevrange(store.keys.log(p), "+", "-", count=1)
            cursors[p] = last[0][0].decode() if last else "0-0"
    stop = anyio.Event()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(until_signal, stop)
            while not stop.is_set():
                quiet = True
                for p in chosen:
                    for entry in await store.log.read_log(p, cursors[p], 500):
                        quiet = False
                        cursors[p] = entry.entry_id
                        print(f"p{p} {entry.entry_id} {entry.raw.decode(errors='replace')}")
                if quiet:
                    with anyio.move_on_after(0.2):
                        await stop.wait()
            tg.cancel_scope.cancel()
    finally:
        await runtime.close()
    return 0


async def _dead_letters(settings: Settings) -> int:
    from engine.run import revive

    runtime = await Runtime.open(settings)
    try:
        found = await revive.dead_letters(runtime.store)
    finally:
        await runtime.close()
    for d in found:
        what = d.execution_id or "(not an execution: cannot be retried)"
        print(
            f"p{d.partition} {d.dead_id} {what} entry={d.entry_id} "
            f"deliveries={d.deliveries} reason={d.reason}"
        )
    if not found:
        print("no dead letters")
    return 0


async def _retry(settings: Settings, execution_id: str | None, by: str) -> int:
    from engine.errors import EngineError
    from engine.run import revive

    runtime = await Runtime.open(settings)
    try:
        if execution_id is not None:
            try:
                done = await revive.retry(runtime.store, execution_id, by, runtime.archive)
            except EngineError as exc:
                print(f"not retried: {exc}", file=sys.stderr)
                return 1
            print(f"retried {done.execution_id} (seq {done.seq}, by {done.requested_by})")
            return 0
        report = await revive.retry_all(runtime.store, by, runtime.archive)
    finally:
        await runtime.close()
    for r in report.retried:
        print(f"retried {r.execution_id} (seq {r.seq}, by {r.requested_by})")
    for dead, reason in report.skipped:
        print(f"skipped p{dead.partition} {dead.dead_id}: {reason}", file=sys.stderr)
    if not report.retried and not report.skipped:
        print("no dead letters")
    return 0


async def _replay(settings: Settings, switch: bool, drop_previous: bool, processes: int) -> int:
    from projections import replay

    runtime = await Runtime.open(settings)
    try:
        bar = _ProgressBar()
        report = await replay.rebuild(runtime, progress=bar.update, processes=processes)
        bar.finish()
        print(report.describe())
        current = report.previous_version
        parity = await replay.compare(runtime, current, report.version)
        print(parity.describe())
        if switch:
            await replay.switch(runtime, report.version)
            print(f"switched to projection version {report.version}")
            if drop_previous:
                removed = await replay.drop(runtime, current)
                print(f"dropped projection version {current} ({removed:,} keys)")
        else:
            print(f"not switched: run again with --switch to make version {report.version} live")
    finally:
        await runtime.close()
    return 0


def _positive(text: str) -> int:
    """An argument that must be a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


class _ProgressBar:
    """The replay's progress on stderr, one line redrawn at each whole percent."""

    def __init__(self, width: int = 40) -> None:
        self.width = width
        self._last = -1

    def update(self, done: int, total: int) -> None:
        pct = 100 if total <= 0 else min(100, done * 100 // total)
        if pct == self._last:
            return
        self._last = pct
        filled = self.width * pct // 100
        bar = "#" * filled + "-" * (self.width - filled)
        print(
            f"\r[{bar}] {pct:3d}%  {done:,}/{total:,} events", end="", file=sys.stderr, flush=True
        )

    def finish(self) -> None:
        print(file=sys.stderr)
