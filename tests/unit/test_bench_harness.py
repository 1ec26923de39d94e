"""The benchmark harness's own behaviour: settings given to every role, the load generator
recording how late it wrote each request (so a starved generator is told from a slow server), and
the repeated runs whose medians bench.run reports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench import common
from bench.common import role_settings, script_names
from bench.http_load import build_request, open_loop
from bench.worker_cost import slowlog_table

pytestmark = pytest.mark.anyio


def test_role_env_settings_are_named_with_or_without_their_prefix() -> None:
    assert role_settings(["BACKGROUND_NICE=0", "CLIPSTREAM_BATCH=50"]) == {
        "CLIPSTREAM_BACKGROUND_NICE": "0",
        "CLIPSTREAM_BATCH": "50",
    }
    for bad in ("BACKGROUND_NICE", "=3"):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            role_settings([bad])


def test_role_env_settings_win_over_a_scenarios_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "ROLE_ENV", {"CLIPSTREAM_BACKGROUND_NICE": "0"})
    env = common.bench_role_env(
        "redis://127.0.0.1:1/0", CLIPSTREAM_BACKGROUND_NICE="5", CLIPSTREAM_BATCH="7"
    )
    assert env["CLIPSTREAM_BACKGROUND_NICE"] == "0"
    assert env["CLIPSTREAM_BATCH"] == "7"


async def test_the_load_generator_records_each_requests_lateness() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
        except asyncio.IncompleteReadError:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = build_request("POST", "/x", f"127.0.0.1:{port}", {}, b"{}")
    async with server:
        result = await open_loop("127.0.0.1", port, request, rate=2_000, total=40, connections=4)
    assert result.statuses == {202: 40}
    assert len(result.latencies_ms) == len(result.late_ms) == 40


def test_the_drains_lag_is_counted_afterwards_from_the_polled_positions() -> None:
    from bench.drain import _most_behind

    # Partition 0 holds 1-0 .. 5-0, partition 1 holds 3-0 and 3-1.
    ids = {0: [(n, 0) for n in range(1, 6)], 1: [(3, 0), (3, 1)]}
    positions = [
        ({0: "0-0", 1: "0-0"}, {0: "2-0", 1: "0-0"}),  # 2 behind
        ({0: "1-0", 1: "0-0"}, {0: "5-0", 1: "3-1"}),  # 4 + 2 behind
        ({0: "5-0", 1: "3-0"}, {0: "5-0", 1: "3-1"}),  # 0 + 1
    ]
    assert _most_behind(positions, ids) == 6
    assert _most_behind([], ids) == 0


def test_the_slowlog_table_sums_by_command_and_names_the_scripts() -> None:
    append = next(sha for sha, name in script_names().items() if name == "event_log.APPEND_BATCH")
    entries = [
        {"command": f"EVALSHA {append} 5 k1 k2".encode(), "duration": 300},
        {"command": f"EVALSHA {append} 5 k1 k2".encode(), "duration": 100},
        {"command": b"XADD log * e payload", "duration": 10},
        {"command": "EVALSHA 0123456789abcdef 1 k", "duration": 4},
    ]
    rows = [line for line in slowlog_table(entries, n=2).splitlines() if line.startswith("  ")]
    assert rows == [
        "  event_log.APPEND_BATCH              1.00 calls    200.0 us",
        "  XADD                                0.50 calls      5.0 us",
        "  script 0123456789                   0.50 calls      2.0 us",
    ]


async def test_the_one_worker_drains_take_turns_and_report_their_medians(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bench import run
    from bench.drain import Drained

    # (drained/s, end to end/s) of each run, in the order the rounds ask for them: 1p, 2p, 1p …
    rates = iter([(100, 90), (95, 99), (120, 80), (99, 97), (110, 85), (98, 30)])
    asked: list[tuple[int, bool]] = []

    async def drain(*args: Any, projectors: int, detail: bool, **_: Any) -> Drained:
        asked.append((projectors, detail))
        per_s, e2e = next(rates)
        return Drained(per_s, e2e, 5.0, 1000.0)

    monkeypatch.setattr(run, "bench_drain", drain)
    report = common.Report()
    await run._one_worker_drains(
        report, "redis://unused", 10, tmp_path, 3, lambda: asked.append((0, False))
    )
    # Each round: one projector, two, then a round of the peers (0); only the first in detail.
    assert asked == [(1, True), (2, True), (0, False)] + [(1, False), (2, False), (0, False)] * 2
    fig = report.figures
    assert fig["drain_one_step_per_s"] == 110  # the median with one projector
    assert (fig["e2e_one_step_per_s"], fig["e2e_one_step_projectors"]) == (97, 2)
    assert "median of 3 runs: 100 / 120 / 110" in [row.note for row in report.rows]


def test_the_peers_take_turns_and_each_figure_is_the_median(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bench import peers

    harness = tmp_path / "harness"
    harness.mkdir()
    (harness / "run_peer.py").write_text("")
    turns: list[str] = []
    drained = {"taskiq-stream": iter([300.0, 100.0, 200.0]), "dramatiq-p1": iter([None] * 3)}
    ceilings = iter([9.0, 7.0, 8.0])

    def one_peer(_h: Path, _py: Path, _a: list[str], name: str, *rest: Any) -> float | None:
        turns.append(name)
        out = rest[-1]
        rate = next(drained[name])
        if rate is None:
            out.notes.append(f"{name}: no venv python (--peers-venv): not run")
        return rate

    def ceiling(*_: Any) -> float:
        turns.append("ceiling")
        return next(ceilings)

    @contextlib.contextmanager
    def no_server() -> Iterator[Any]:
        yield SimpleNamespace(port=1)

    monkeypatch.setattr(peers, "_one_peer", one_peer)
    monkeypatch.setattr(peers, "_ceiling", ceiling)
    monkeypatch.setattr(peers, "redis_server", no_server)
    with peers.PeerRuns(harness, tmp_path, tmp_path / "work", n=10, ceiling_n=10) as runs:
        for _ in range(3):
            runs.round()
        got = runs.figures()
    assert turns == ["taskiq-stream", "dramatiq-p1", "ceiling"] * 3
    assert got.drained_per_s == {"taskiq-stream": 200.0, "dramatiq-p1": None}
    assert got.runs["taskiq-stream"] == [300.0, 100.0, 200.0]
    assert got.ceiling_e2e_per_s == 8.0
    assert got.notes == ["dramatiq-p1: no venv python (--peers-venv): not run"]  # said once
    assert got.best == ("taskiq-stream", 200.0)


def test_the_peers_package_versions_are_written_beside_their_figures(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A peer's rate moves with its packages: the versions its venv holds go in its row and in
    latest.json; a peer without a venv gets none, and a package not installed reads absent."""
    import importlib.metadata
    import sys

    from bench import peers
    from bench.common import Report
    from bench.peers import report_peers

    harness = tmp_path / "harness"
    harness.mkdir()
    (harness / "run_peer.py").write_text("")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"  # this test's interpreter; no taskiq-latest: taskiq has none
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)

    @contextlib.contextmanager
    def no_server() -> Iterator[Any]:
        yield SimpleNamespace(port=1)

    monkeypatch.setattr(peers, "redis_server", no_server)
    monkeypatch.setattr(peers, "_one_peer", lambda *_: 100.0)
    monkeypatch.setattr(peers, "_ceiling", lambda *_: 1000.0)
    with peers.PeerRuns(harness, venv, tmp_path / "work", n=10, ceiling_n=10) as runs:
        runs.round()
        got = runs.figures()
    redis_version = importlib.metadata.version("redis")
    assert list(got.versions) == ["dramatiq-p1"]
    assert got.versions["dramatiq-p1"]["dramatiq"] is None  # not in this test's environment
    assert got.versions["dramatiq-p1"]["redis"] == redis_version

    report = Report()
    report_peers(report, got)
    assert report.figures["peer_versions"] == got.versions
    [row] = [r for r in report.rows if r.name.startswith("peer: dramatiq-p1")]
    assert f"dramatiq absent, redis {redis_version}, hiredis " in row.note
    [row] = [r for r in report.rows if r.name.startswith("peer: taskiq-stream")]
    assert "redis" not in row.note


def test_a_folds_idle_share_is_what_neither_projectors_nor_redis_used() -> None:
    from bench.fold import Fold, _idle

    assert _idle(Fold(60_000.0, [0.44, 0.40], 0.46), cores=2) == pytest.approx(0.35)
    assert _idle(Fold(40_000.0, [1.3], 0.9), cores=2) == 0.0  # never below nothing


def test_bench_run_refuses_fewer_than_one_round(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bench import run

    monkeypatch.setattr("sys.argv", ["bench.run", "--rounds", "0"])
    with pytest.raises(SystemExit) as exited:
        run.main()
    assert exited.value.code == 2
    assert "--rounds 0: at least 1" in capsys.readouterr().err


def test_each_target_is_met_missed_by_how_much_or_not_measured() -> None:
    from bench.summary import targets

    verdicts = targets(
        {
            "peer_best_per_s": 3_000.0,
            "e2e_one_step_per_s": 4_500.0,  # 2 x 3,000 is 6,000: missed by a quarter
            "projectors_2_vs_1": 1.6,  # >= holds at the bound
            "latency_202_p99_ms_api_alone": 5.0,  # < does not
            "events_per_one_step_execution": 5.0,
            "drain_one_step_per_s": 4_000.0,
            "workflow_three_step_per_s": 2_000.0,
            "replay_events_per_s": 150_000,
            "replay_events": 100_000,  # a --quick run
        }
    )
    assert verdicts["e2e_one_step_per_s"] == {
        "value": 4_500.0,
        "target": ">= 6000.0",
        "status": "missed",
        "by": "25% (-1500.0)",
    }
    assert verdicts["projectors_2_vs_1"]["status"] == "met"
    assert verdicts["latency_202_p99_ms_api_alone"]["status"] == "missed"
    assert verdicts["events_per_one_step_execution"]["status"] == "met"
    assert verdicts["workflow_three_step_per_s"]["status"] == "met"
    assert verdicts["replay_events_per_s"]["status"] == "met"
    assert "fewer than 1,000,000 events" in verdicts["replay_events_per_s"]["note"]
    assert verdicts["io_bound_2_workers_vs_1"] == {"status": "not measured in this run"}
    assert verdicts["latency_202_p99_ms_shared_box"] == {"status": "not measured in this run"}


def test_a_partial_run_keeps_the_verdicts_it_did_not_measure(tmp_path: Path) -> None:
    import datetime as dt
    import json

    from bench.common import Report
    from bench.summary import merge_into, targets

    path = tmp_path / "latest.json"
    whole = Report()
    whole.figures |= {"projectors_2_vs_1": 1.25, "replay_events_per_s": 240_000}
    whole.figures["targets"] = targets(whole.figures)
    whole.rss["api"] = 80.4
    when = dt.datetime(2026, 12, 5, 18, 0, tzinfo=dt.UTC)
    merge_into(path, whole, when, quick=False, scenarios=["fold", "replay"])

    partial = Report()
    partial.figures["projectors_2_vs_1"] = 1.7
    partial.figures["targets"] = targets(partial.figures)
    later = merge_into(path, partial, when, quick=True, scenarios=["fold"])

    assert json.loads(path.read_text()) == later
    assert later["targets"]["projectors_2_vs_1"]["status"] == "met"  # this run's own verdict
    assert later["targets"]["replay_events_per_s"]["value"] == 240_000  # kept from the file
    assert later["replay_events_per_s"] == 240_000
    assert (later["quick"], later["scenarios"]) == (True, ["fold"])
    assert later["date"] == "2026-12-05 18:00 UTC"
    assert later["rss_mib"] == {"api": 80}  # the whole run's, as this one measured none


def test_the_box_bounds_what_two_projectors_can_fold_over_one() -> None:
    from bench.fold import Fold, box_bound
    from bench.summary import targets

    # One projector a whole core busy and Redis half of one: two need 3 cores for twice the rate.
    assert box_bound(Fold(70_000.0, [1.0], 0.5), cores=2) == pytest.approx(1.33, abs=0.01)
    assert box_bound(Fold(30_000.0, [0.5], 0.3), cores=2) == 2.0  # never past twice
    assert box_bound(Fold(0.0, [0.0], 0.0), cores=2) == 2.0
    verdict = targets({"projectors_2_vs_1": 1.25, "projectors_2_vs_1_box_bound": 1.33})
    assert verdict["projectors_2_vs_1"]["status"] == "missed"
    assert "this box allows at most 1.33" in verdict["projectors_2_vs_1"]["note"]
    assert "note" not in targets({"projectors_2_vs_1": 1.25})["projectors_2_vs_1"]
