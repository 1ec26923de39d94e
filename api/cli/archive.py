"""``clipstream archiver`` (the role) and ``clipstream archive status | verify | export``.

The archiver role composes the engine's archiver (engine.archive.archiver) with what only this
layer may join to it: the projections' checkpoints, which the trim floor must stay below, and the
finished views' sweep (projections.retention: packed past the hot window, evicted past the view
retention).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import logging
import sys

import anyio

from api.cli.runner import Subcommands, add_metrics_arguments, run, run_role, with_metrics
from engine.errors import ConfigError
from engine.runtime import Runtime
from engine.settings import Settings

log = logging.getLogger("clipstream")


def add_parsers(sub: Subcommands) -> None:
    """Add ``archiver`` and ``archive`` to the ``clipstream`` parser."""
    archiver = sub.add_parser(
        "archiver",
        help="copy the partition logs and ledgers into the archive, then trim Redis "
        "(needs CLIPSTREAM_REDIS_URL; CLIPSTREAM_ARCHIVE_URL names the archive)",
    )
    add_metrics_arguments(archiver)
    archiver.set_defaults(handler=_archiver_command)
    archive = sub.add_parser("archive", help="the archive tier: status, verify, export")
    archive.set_defaults(handler=_archive_command)
    actions = archive.add_subparsers(dest="archive_command", required=True, metavar="ACTION")
    actions.add_parser(
        "status", help="per partition: archive position and lag, bytes, segments, trim floor"
    )
    verify = actions.add_parser(
        "verify", help="check every segment's checksum, order and count against the manifests "
        "(exit 1 on any problem)"
    )  # fmt: skip
    verify.add_argument("-p", "--partition", type=int, action="append", dest="partitions")
    export = actions.add_parser(
        "export", help="print the log as JSON lines (archive, then the hot tail)"
    )
    export.add_argument("-p", "--partition", type=int, action="append", dest="partitions")
    export.add_argument(
        "--since",
        default="0",
        help="only entries after this: a stream id (1733300000000-0), ms since the epoch, or an "
        "ISO 8601 time (2026-12-01T00:00:00Z)",
    )


# -- the role ------------------------------------------------------------------------------------


def _archiver_command(settings: Settings, args: argparse.Namespace) -> int:
    run(run_role, settings, with_metrics(archiver_role, args))
    return 0


async def archiver_role(runtime: Runtime, stop: anyio.Event) -> None:
    """The archiver and the finished views' sweep (packing, and eviction when configured) until
    ``stop``."""
    from engine.archive.archiver import Archiver
    from projections.namespace import checkpoint_positions
    from projections.retention import ViewRetention

    consumers = functools.partial(checkpoint_positions, runtime.redis, runtime.store.keys)
    archiver = Archiver(runtime.store, runtime.archive, consumers)
    where = runtime.archive.url if runtime.archive else "none (nothing replay needs is trimmed)"
    log.info("archiver %s started: archive %s, hot window %ds", archiver.archiver_id, where,
             runtime.settings.hot_seconds)  # fmt: skip
    async with anyio.create_task_group() as tg:
        tg.start_soon(ViewRetention(runtime).run, stop)
        await archiver.run(stop)


# -- the operator commands -----------------------------------------------------------------------


def _archive_command(settings: Settings, args: argparse.Namespace) -> int:
    return run(_archive, settings, args)


async def _archive(settings: Settings, args: argparse.Namespace) -> int:
    runtime = await Runtime.open(settings)
    try:
        if args.archive_command == "status":
            return await _status(runtime)
        if runtime.archive is None:
            raise ConfigError("no archive: set CLIPSTREAM_ARCHIVE_URL")
        if args.archive_command == "verify":
            return await _verify(runtime, args.partitions)
        return await _export(runtime, args.partitions, _since(args.since))
    finally:
        await runtime.close()


async def _status(runtime: Runtime) -> int:
    from engine.archive.report import archive_status

    settings = runtime.settings
    if runtime.archive is None:
        print("archive: NONE (CLIPSTREAM_ARCHIVE_URL unset): nothing replay needs is trimmed, "
              "so the partition logs and ledgers grow without bound")  # fmt: skip
    else:
        print(f"archive: {runtime.archive.url}   hot window: {settings.hot_seconds}s")
    print(
        f"{'part':>4} {'position':>22} {'archived':>10} {'MiB':>8} {'segs':>5} {'in redis':>9} "
        f"{'lag':>8} {'lag s':>7}  trim floor (held by)"
    )
    errors = 0
    for s in await archive_status(runtime.store):
        print(
            f"{s.partition:>4} {s.position:>22} {s.archived_entries:>10} "
            f"{s.archived_bytes / 2**20:>8.2f} {s.segments:>5} {s.log_length:>9} "
            f"{s.lag_entries:>8} {s.lag_ms / 1000:>7.0f}  {s.trimmed_below} ({s.held_by or '-'})"
        )
        if s.error:
            errors += 1
            print(f"     ERROR: {s.error}")
    return 1 if errors else 0


async def _verify(runtime: Runtime, partitions: list[int] | None) -> int:
    from engine.archive.report import verify

    assert runtime.archive is not None
    found = await verify(runtime.store, runtime.archive, partitions)
    for warning in found.warnings:
        print(f"warning: {warning}")
    for problem in found.problems:
        print(f"PROBLEM: {problem}")
    status = "ok" if found.ok else f"{len(found.problems)} problem(s)"
    print(f"{found.partitions} partitions, {found.segments} segments, {found.entries:,} log "
          f"entries: {status}")  # fmt: skip
    return 0 if found.ok else 1


async def _export(runtime: Runtime, partitions: list[int] | None, since: str) -> int:
    from engine.archive.report import export_lines

    chosen = partitions if partitions else list(runtime.store.partitions)
    out = sys.stdout.buffer
    async for line in export_lines(runtime.store, runtime.archive, chosen, since):
        out.write(line + b"\n")
    out.flush()
    return 0


def _since(text: str) -> str:
    """``--since`` as the stream id to read after."""
    text = text.strip()
    if text.isdigit():
        return _before(int(text))
    if "-" in text and all(part.isdigit() for part in text.split("-", 1)):
        return text
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected a stream id, ms or an ISO time") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return _before(int(stamp.timestamp() * 1000))


def _before(ms: int) -> str:
    """The last stream id before millisecond ``ms`` (entries from ``ms`` on come after it)."""
    return f"{ms - 1}-{2**64 - 1}" if ms > 0 else "0-0"
