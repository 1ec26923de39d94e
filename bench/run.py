"""clipstream benchmarks: one command, one summary table.

    python -m bench.run            # the full run (several minutes on 2 cores)
    python -m bench.run --quick    # smaller numbers, for a smoke test
    python -m bench.run --out bench/results/2026-11-29-pm.md

Every scenario runs against a private redis-server started on a free port (no persistence), with
the roles as separate processes exactly as they are deployed (`clipstream worker`, `projector`,
`api`) and the simulated providers at zero latency. Numbers are taken from the events' own
timestamps where possible, so process start-up is excluded.

Besides the table it writes bench/results/latest.json (--json): every figure the issues ask for
(drain_one_step_per_s, e2e_one_step_per_s, projectors_2_vs_1, io_bound_2_workers_vs_1,
replay_events_per_s, replay_from_archive_events_per_s, latency_202_p99_ms_api_alone and
_shared_box, events_ and redis_bytes_per_one_step_execution, workflow_three_step_per_s,
peer_best_per_s and which peer, ceiling_e2e_per_s) and a `targets` section: each target of issue
12 (and issue 13's replay from the archive) met, missed by how much, or
not measured.

Scenarios:
  drain     N one-step transcript executions queued up front, then W worker processes and one or
            two projectors: executions/s (first ExecutionStarted → last ExecutionCompleted), end
            to end (→ every view current), the projection lag, events and Redis bytes per
            execution. One worker runs --rounds times with one, then two projectors, taking
            turns, with a round of the peers after each (when they run too): the figures are the
            medians.
  fold      a synthetic log folded by one, then two projector processes, three times each
            alternating: the median events/s of each, and their ratio.
  workflow  three-step workflows/s (0 ms providers); one-step executions with 200 ms providers,
            one worker then two (the I/O-bound ratio).
  latency   `POST /v1/items/{id}/transcript` at a steady open-loop rate: 202 latency p50/p99,
            measured from each request's scheduled send time (no coordinated omission), with the
            API alone, then with a worker and a projector on the same box (at their
            CLIPSTREAM_BACKGROUND_NICE, as deployed); the API process's CPU per 202 and its time
            runnable but waiting for a core (/proc), and how late the generator itself wrote
            the requests (bench.shared_box breaks the shared case down further).
  replay    `projections.replay.rebuild` over a synthetic log of >= 1,000,000 events, split over
            --replay-processes: events/s.
  archive-replay
            the same log, all but its last 5% archived to a directory and trimmed from Redis,
            rebuilt from the archive plus the hot tail with 1, then --replay-processes
            processes: the best events/s (bench/archive_replay.py, also `python -m
            bench.archive_replay`).
  peers     taskiq's stream broker and Dramatiq (one worker process each) and ceiling_spike.py,
            from the peer harness (--peers-dir, --peers-venv; see bench/peers.py), --rounds
            rounds taking turns (between our one-worker drains when drain runs too), the
            medians: null and a note when they are missing.
  realtime  append -> WebSocket delivery latency p50/p99 with --subscribers (1,000) connected to
            one API process at --event-rate (200) events/s; see bench/realtime.py.
  soak      (only with --only soak) 10 minutes at 220 one-step transcripts/s with the archive on
            a directory and a 60 s hot window: Redis memory flat, bytes kept per finished
            execution, nothing lost, replay from the archive; see bench/soak.py.

drain and workflow are bench/drain.py, fold bench/fold.py, latency bench/latency.py, realtime
bench/realtime.py, soak bench/soak.py, the peers bench/peers.py; what a run writes (the table,
the targets' verdicts, latest.json) is bench/summary.py. This module runs the scenarios, replay
among them, and the command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.archive_replay import bench_archive_replay
from bench.common import (
    ROLE_ENV,
    THREE_STEPS,
    Report,
    bench_settings,
    fresh_runtime,
    role_settings,
    runs_note,
    write_synthetic_log,
)
from bench.drain import Drained, bench_drain
from bench.fold import bench_fold_ratio
from bench.latency import bench_latency
from bench.peers import (
    PeerRuns,
    default_peers_dir,
    default_peers_venv,
    report_peers,
)
from bench.realtime import bench_realtime
from bench.soak import bench_soak
from bench.summary import merge_into, render, targets
from tests.servers import redis_server

SCENARIOS = (
    "drain",
    "fold",
    "workflow",
    "latency",
    "replay",
    "archive-replay",
    "realtime",
    "peers",
)
RESULTS = Path(__file__).resolve().parent / "results"
EXTRA_SCENARIOS = ("soak",)  # run only when named: the soak alone takes about 17 minutes


async def bench_replay(report: Report, url: str, events: int, processes: int) -> float:
    """``projections.replay.rebuild`` over a synthetic log of ``events``: events/s."""
    from projections import replay

    runtime = await fresh_runtime(bench_settings(url))
    try:
        t = time.perf_counter()
        executions = await write_synthetic_log(runtime, events)
        print(
            f"  (synthetic log of {executions * 5:,} events written in "
            f"{time.perf_counter() - t:.1f}s)",
            flush=True,
        )
        result = await replay.rebuild(runtime, processes=processes)
        rate = result.events / result.seconds
        report.add(
            "replay: events folded and written per second",
            f"{rate:,.0f}",
            f"{result.events:,} events, {result.executions:,} views in {result.seconds:.1f}s "
            f"({result.processes} process(es))",
        )
        return rate
    finally:
        await runtime.close()


async def main_async(args: argparse.Namespace) -> Report:
    report = Report()
    fig = report.figures
    n = 5_000 if args.quick else 30_000
    rounds = args.rounds or (1 if args.quick else 3)
    replay_events = 100_000 if args.quick else 1_000_000
    with contextlib.ExitStack() as stack:
        logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cs-bench-")))
        server = stack.enter_context(redis_server())
        peers = None
        if "peers" in args.only:
            peers = PeerRuns(
                args.peers_dir,
                args.peers_venv,
                logs,
                n=2_000 if args.quick else 20_000,
                ceiling_n=5_000 if args.quick else 50_000,
            )
            stack.enter_context(peers)
        try:
            if "drain" in args.only:
                between = peers.round if peers is not None else None
                await _one_worker_drains(report, server.url, n, logs, rounds, between)
                await bench_drain(report, server.url, n, 2, logs)
            if "fold" in args.only:
                events = 60_000 if args.quick else 300_000
                folds = 1 if args.quick else 3
                ratio = await bench_fold_ratio(report, server.url, events, logs, folds)
                fig["projectors_2_vs_1"] = round(ratio.ratio, 2)
                fig["projectors_2_vs_1_box_bound"] = round(ratio.box_bound, 2)
            if "workflow" in args.only:
                three = await bench_drain(
                    report,
                    server.url,
                    n // 3,
                    1,
                    logs,
                    tools=THREE_STEPS,
                    label="three-step workflows/s, 0 ms providers",
                )
                fig["workflow_three_step_per_s"] = round(three.per_s, 1)
                io = [
                    await bench_drain(
                        report,
                        server.url,
                        2_000 if args.quick else 6_000,
                        workers,
                        logs,
                        latency_ms=200,
                        label="one-step transcripts/s, 200 ms providers",
                    )
                    for workers in (1, 2)
                ]
                fig["io_bound_2_workers_vs_1"] = round(io[1].per_s / io[0].per_s, 2)
            if "latency" in args.only:
                secs = 3 if args.quick else 10
                alone = await bench_latency(report, server.url, args.rate, secs, logs, alone=True)
                shared = await bench_latency(report, server.url, args.rate, secs, logs)
                fig["latency_202_p99_ms_api_alone"] = round(alone, 2)
                fig["latency_202_p99_ms_shared_box"] = round(shared, 2)
            if "replay" in args.only:
                rate = await bench_replay(report, server.url, replay_events, args.replay_processes)
                fig["replay_events_per_s"] = round(rate)
                fig["replay_events"] = replay_events
            if "archive-replay" in args.only:
                processes = sorted({1, args.replay_processes})
                arch = await bench_archive_replay(
                    report, server.url, replay_events, processes, logs
                )
                fig["replay_from_archive_events_per_s"] = round(arch.best)
                fig["replay_from_archive_events"] = arch.events
                fig["replay_from_archive_by_processes"] = {
                    str(n): round(rate) for n, rate in arch.rates.items()
                }
            if "realtime" in args.only:
                await bench_realtime(
                    report,
                    server.url,
                    subscribers=100 if args.quick else args.subscribers,
                    rate=args.event_rate,
                    seconds=3 if args.quick else 20,
                    logs=logs,
                )
            if "soak" in args.only:
                await bench_soak(report, server.url, logs, quick=args.quick)
        except Exception:
            _dump_logs(logs)
            raise
        if peers is not None:
            while peers.rounds < rounds:  # those not run between our drains
                peers.round()
            report_peers(report, peers.figures())
    fig["targets"] = targets(fig)
    return report


async def _one_worker_drains(
    report: Report,
    url: str,
    n: int,
    logs: Path,
    rounds: int,
    between: Callable[[], None] | None = None,
) -> None:
    """One worker with one, then two projectors, ``rounds`` times, ``between`` (a round of the
    peers) after each: the one-step drain rate is the median with one projector, the end-to-end
    rate the better of the two medians (the issue lets the end-to-end run choose one or two
    projectors)."""
    runs: dict[int, list[Drained]] = {1: [], 2: []}
    for r in range(rounds):
        for projectors in (1, 2):
            runs[projectors].append(
                await bench_drain(report, url, n, 1, logs, projectors=projectors, detail=r == 0)
            )
        if between is not None:
            between()
    first = runs[1][0]
    drained = statistics.median(d.per_s for d in runs[1])
    e2e = {p: statistics.median(d.e2e_per_s for d in got) for p, got in runs.items()}
    best = max(e2e, key=lambda p: e2e[p])
    fig = report.figures
    fig["drain_one_step_per_s"] = round(drained, 1)
    fig["events_per_one_step_execution"] = round(first.events_per_execution, 2)
    fig["redis_bytes_per_one_step_execution"] = round(first.redis_bytes_per_execution)
    fig["e2e_one_step_per_s"] = round(e2e[best], 1)
    fig["e2e_one_step_projectors"] = best
    if rounds > 1:
        report.add(
            "drain: one-step transcripts/s, 1 worker, 1 projector, median",
            f"{drained:,.0f}",
            runs_note([d.per_s for d in runs[1]]),
        )
        for projectors, got in runs.items():
            report.add(
                f"end to end: one-step executions/s, 1 worker, {projectors} projector(s), median",
                f"{e2e[projectors]:,.0f}",
                runs_note([d.e2e_per_s for d in got]),
            )


def _dump_logs(logs: Path) -> None:
    for log in sorted(logs.glob("*.log")):
        print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description="clipstream benchmarks (one summary table)")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--rate", type=int, default=500, help="requests/s of the latency run")
    parser.add_argument(
        "--subscribers", type=int, default=1_000, help="WebSocket clients of the realtime run"
    )
    parser.add_argument(
        "--event-rate", type=int, default=200, help="events/s appended in the realtime run"
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SCENARIOS + EXTRA_SCENARIOS,
        default=list(SCENARIOS),
        help="run only these scenarios",
    )
    parser.add_argument(
        "--role-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a CLIPSTREAM_NAME setting for every role process the scenarios start, over their "
        "own (repeatable), e.g. --role-env BACKGROUND_NICE=0 to measure without the background "
        "roles' lower CPU priority",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="runs of the one-worker drains and of each peer, taking turns; their figures are "
        "the medians (default 3, or 1 with --quick)",
    )
    parser.add_argument("--out", type=Path, help="also write the table (markdown) to this file")
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS / "latest.json",
        help="where the figures and the targets are merged in as JSON (default: "
        "bench/results/latest.json; other keys of the file are kept, and so are the verdicts "
        "of targets and the peak RSS of processes this run does not measure)",
    )
    parser.add_argument(
        "--replay-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="processes the replay scenario splits the partitions among (default: one per core)",
    )
    parser.add_argument(
        "--peers-dir",
        type=Path,
        default=default_peers_dir(),
        help="the peer harness (run_peer.py, ceiling_spike.py); default $CLIPSTREAM_PEERS_DIR or "
        "../shared/peers beside the repository",
    )
    parser.add_argument(
        "--peers-venv",
        type=Path,
        default=default_peers_venv(),
        help="the venv with the peers' packages, outside the repository (its README's setup); "
        "default $CLIPSTREAM_PEERS_VENV or $XDG_CACHE_HOME/clipstream-peers-venv",
    )
    args = parser.parse_args()
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: at least 1")
    try:
        ROLE_ENV.update(role_settings(args.role_env))
    except ValueError as exc:
        parser.error(str(exc))
    started = dt.datetime.now(dt.UTC)
    report = asyncio.run(main_async(args))
    text = render(report, started)
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    merge_into(args.json, report, started, quick=args.quick, scenarios=args.only)
    print(f"figures and targets written to {args.json}")


if __name__ == "__main__":
    main()
