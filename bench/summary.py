"""What a benchmark run leaves behind: the summary table (markdown, with the machine it ran
on), the verdict on each target of issue 12 (and issue 13's replay from the archive), and
bench/results/latest.json, into which each run merges its figures.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.common import Report


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    redis_v = redis_v.split()[2].removeprefix("v=") if redis_v else "?"
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB, Linux {platform.release()}, "
        f"CPython {platform.python_version()}, Redis {redis_v} on loopback, no persistence"
    )


def targets(fig: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target of issue 12, and issue 13's replay from the archive: met, missed (by how
    much) or not measured in this run."""
    peer = fig.get("peer_best_per_s")
    one = fig.get("drain_one_step_per_s")
    # Each figure's name in latest.json, how it must compare, and with what (None: no bound).
    checks: list[tuple[str, str, float | None]] = [
        ("e2e_one_step_per_s", ">=", 2 * peer if peer else None),
        ("projectors_2_vs_1", ">=", 1.6),
        ("io_bound_2_workers_vs_1", ">=", 1.8),
        ("replay_events_per_s", ">=", 100_000.0),
        ("replay_from_archive_events_per_s", ">=", 100_000.0),
        ("latency_202_p99_ms_api_alone", "<", 5.0),
        ("latency_202_p99_ms_shared_box", "<", 50.0),
        ("events_per_one_step_execution", "<=", 5.0),
        ("workflow_three_step_per_s", ">=", 0.5 * one if one else None),
    ]
    counted = {  # a replay's rate and the events it was measured over
        "replay_events_per_s": "replay_events",
        "replay_from_archive_events_per_s": "replay_from_archive_events",
    }
    out: dict[str, dict[str, Any]] = {}
    for name, op, bound in checks:
        value = fig.get(name)
        if value is None or bound is None:
            out[name] = {"status": "not measured in this run"}
            continue
        met = value >= bound if op == ">=" else value < bound if op == "<" else value <= bound
        entry: dict[str, Any] = {"value": value, "target": f"{op} {round(bound, 2)}"}
        if met:
            entry["status"] = "met"
        else:
            entry["status"] = "missed"
            entry["by"] = f"{abs(value - bound) / bound:.0%} ({round(value - bound, 2):+})"
        if name in counted and fig.get(counted[name], 0) < 1_000_000:
            entry["note"] = "measured over fewer than 1,000,000 events (--quick)"
        allowed = fig.get("projectors_2_vs_1_box_bound")
        if name == "projectors_2_vs_1" and allowed is not None and allowed < bound:
            entry["note"] = (
                f"this box allows at most {allowed}: its cores over what one projector and "
                "Redis kept busy (bench.fold.box_bound)"
            )
        out[name] = entry
    return out


def render(report: Report, started: dt.datetime) -> str:
    lines = [
        f"# clipstream benchmark — {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {machine()}.",
        "",
        "| measure | result | detail |",
        "|---|---:|---|",
        *(f"| {r.name} | {r.value} | {r.note} |" for r in report.rows),
        "",
        "| process | peak RSS MiB |",
        "|---|---:|",
        *(f"| {name} | {mib:.0f} |" for name, mib in sorted(report.rss.items())),
        "",
    ]
    return "\n".join(lines)


def merge_into(
    path: Path,
    report: Report,
    started: dt.datetime,
    *,
    quick: bool,
    scenarios: list[str],
) -> dict[str, Any]:
    """Merge this run's figures into the JSON document at ``path`` (written back; returned).

    Other keys of the file are kept: other scenarios (realtime) write their own keys there too.
    A target this run did not measure keeps the file's verdict, and a process it did not measure
    its peak RSS (a partial run, --only, must not erase what a whole one found); every verdict
    names the value it was read from."""
    try:
        document: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        document = {}
    unmeasured = {
        name
        for name, verdict in report.figures.get("targets", {}).items()
        if "value" not in verdict
    }
    kept = {k: v for k, v in document.get("targets", {}).items() if k in unmeasured}
    document |= {
        "date": f"{started:%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "quick": quick,
        "scenarios": scenarios,
        **report.figures,
    }
    rss = {k: round(v) for k, v in report.rss.items()}
    document["rss_mib"] = dict(sorted((document.get("rss_mib", {}) | rss).items()))
    document["targets"] = {**document.get("targets", {}), **kept}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return document
