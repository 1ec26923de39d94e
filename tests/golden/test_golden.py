"""Golden logs: recorded event streams (one event JSON per line, as ``codec.encode`` writes it)
must still decode and fold to their stored expected views. A failure here means either an event
shape changed incompatibly (fix the change) or the view's public shape changed (a contract
change: regenerate with ``python -m tests.golden.scenarios`` and review the diff)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.log import codec
from engine.money import billing
from projections.fold import fold
from tests.rendered import execution_body, run_body

GOLDEN = Path(__file__).resolve().parent
LOGS = sorted(GOLDEN.glob("*.jsonl"))


def test_there_are_golden_logs() -> None:
    assert {p.stem for p in LOGS} >= {
        "transcript_done",
        "retried_then_done",
        "provider_failed",
        "cancelled",
        "three_steps",
        "insufficient_balance",
        "schedule_run",
        "uncovered_cost_capped",
        "billed_out_of_balance",
        "billed_takeover_retried",
        "settled_one_step",
        "settled_takeover_capped",
    }


@pytest.mark.parametrize("log", LOGS, ids=[p.stem for p in LOGS])
def test_golden_log_folds_to_its_stored_view(log: Path) -> None:
    events = [codec.decode(line) for line in log.read_bytes().splitlines() if line.strip()]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    expected = json.loads(log.with_suffix(".view.json").read_text())
    assert execution_body(fold(events)) == expected


@pytest.mark.parametrize("log", LOGS, ids=[p.stem for p in LOGS])
def test_golden_log_folds_the_same_with_every_event_delivered_twice(log: Path) -> None:
    events = [codec.decode(line) for line in log.read_bytes().splitlines() if line.strip()]
    doubled = [e for event in events for e in (event, event)]
    assert fold(doubled) == fold(events)


def test_a_one_step_execution_is_five_events_that_move_its_money() -> None:
    """The shape the worker writes: the reservation on the StepStarted, the release and the charge
    on the StepCompleted."""
    log = GOLDEN / "settled_one_step.jsonl"
    events = [codec.decode(line) for line in log.read_bytes().splitlines() if line.strip()]
    assert len(events) == 5
    moves = [(m.kind, m.amount) for m in billing.moves_of(events)]
    assert moves == [("reserve", -4_000), ("release", 4_000), ("settle", -3_000)]


def test_a_schedule_runs_log_folds_to_its_stored_run() -> None:
    """A recorded schedule run (a processed, a seen, a capped and a too-old video of one channel,
    and a channel whose sync failed) folds to the run view the runs routes serve."""
    log = GOLDEN / "schedule_run.jsonl"
    events = [codec.decode(line) for line in log.read_bytes().splitlines() if line.strip()]
    expected = json.loads((GOLDEN / "schedule_run.run.json").read_text())
    assert run_body(fold(events)) == expected
