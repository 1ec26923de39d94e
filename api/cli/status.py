"""``clipstream status``: the store at a glance, as a table or (``--json``) for scripts.

Per partition the log, executions queued and leased, the age of the
oldest one waiting, dead letters, and the live projection's checkpoint and lag; then Redis memory,
the archive, and the workers (live, or holding leases) with the leases each holds. The figures
are projections.inspection's, the same ones ``/metrics`` and the console serve.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

import orjson

from api.cli.runner import Subcommands, run
from engine.runtime import Runtime
from engine.settings import Settings
from projections import inspection


def add_parser(sub: Subcommands) -> None:
    """Add ``status`` to the ``clipstream`` parser."""
    status = sub.add_parser(
        "status",
        help="partitions (queues, leases, oldest pending, dead letters, projection lag), Redis "
        "memory, the archive, live workers and what they hold",
    )
    status.add_argument("--json", action="store_true", help="one JSON document, for scripts")
    status.set_defaults(handler=_status_command)


def _status_command(settings: Settings, args: argparse.Namespace) -> int:
    return run(_status, settings, args.json)


async def report(runtime: Runtime) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data (what ``--json`` prints)."""
    from projections.namespace import current_version

    store = runtime.store
    memory = await inspection.redis_memory(runtime)
    return {
        "partitions": store.keys.partitions,
        "projection_version": await current_version(store.redis, store.keys),
        "archive": runtime.archive.url if runtime.archive else None,
        "archivers": await inspection.archivers(runtime),
        "redis_memory": None if memory is None else asdict(memory),
        "partition": [asdict(f) for f in await inspection.partitions(runtime)],
        "workers": [
            {**asdict(w), "held": w.held, "leases": {str(p): n for p, n in w.leases.items()}}
            for w in await inspection.workers(runtime)
        ],
    }


async def _status(settings: Settings, as_json: bool) -> int:
    runtime = await Runtime.open(settings)
    try:
        data = await report(runtime)
    finally:
        await runtime.close()
    if as_json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
    else:
        print(_table(data))
    return 0


def _age(ms: int | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _table(data: dict[str, Any]) -> str:
    lines = [f"partitions: {data['partitions']}   projection version: {data['projection_version']}"]
    memory = data["redis_memory"]
    if memory is None:
        lines.append(
            "redis memory: - (this store does not report it: the embedded store has no INFO)"
        )
    else:
        limit = _mib(memory["max_bytes"]) if memory["max_bytes"] else "no limit"
        lines.append(
            f"redis memory: {_mib(memory['used_bytes'])} used, peak "
            f"{_mib(memory['peak_bytes'])}, maxmemory {limit}"
        )
    if data["archive"] is None and data["archivers"]:
        lines.append(
            f"archive: not configured for this command, but the logs are archived and trimmed "
            f"by archiver {', '.join(data['archivers'])} (set their CLIPSTREAM_ARCHIVE_URL here "
            "to read the archive; serve's own archive lives in its memory)"
        )
    elif data["archive"] is None:
        lines.append("archive: NONE (nothing replay needs is trimmed; set CLIPSTREAM_ARCHIVE_URL)")
    else:
        lines.append(f"archive: {data['archive']} (positions: clipstream archive status)")
    lines.append(
        f"{'part':>4} {'log':>9} {'queued':>8} {'oldest':>8} {'leased':>8} "
        f"{'dead':>6} {'proj lag':>9} {'lag age':>8}  checkpoint"
    )
    for p in data["partition"]:
        proj_lag = p["projection_lag_entries"]
        proj = f"{proj_lag}+" if proj_lag >= inspection.LAG_COUNT_CAP else str(proj_lag)
        lines.append(
            f"{p['partition']:>4} {p['log_entries']:>9} {p['queued']:>8} "
            f"{_age(p['oldest_pending_ms']):>8} {p['leased']:>8} {p['dead_letters']:>6} "
            f"{proj:>9} {_age(p['projection_lag_ms'] or None):>8}  {p['checkpoint']}"
        )
    workers = data["workers"]
    live = sum(1 for w in workers if w["live"])
    lines.append(f"live workers: {live}")
    for w in workers:
        parts = ", ".join(f"p{p}: {n}" for p, n in sorted(w["leases"].items(), key=_numeric))
        held = f"{w['held']} leases ({parts})" if w["held"] else "no leases"
        beat = "no heartbeat" if w["beat_ms"] is None else f"beat {_age(w['beat_ms'])} ago"
        gone = "" if w["live"] else "  NOT LIVE (its leases wait for a takeover)"
        lines.append(f"  {w['worker_id']}  {beat}  {held}{gone}")
        for xid in w["executions"]:
            lines.append(f"    {xid}")
        if w["held"] > len(w["executions"]):
            lines.append(f"    ... and {w['held'] - len(w['executions'])} more")
    return "\n".join(lines)


def _numeric(item: tuple[str, int]) -> int:
    return int(item[0])
