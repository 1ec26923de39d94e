"""CLIPSTREAM_BACKGROUND_NICE: the setting, and the background roles lowering their own priority
(never raising it). Priorities are changed in child processes only: this one keeps its own."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.errors import ConfigError
from engine.settings import Settings
from tests.processes import ROOT


def test_the_background_nice_is_10_unless_set_from_0_to_19() -> None:
    assert Settings.from_env({}).background_nice == 10
    assert Settings.from_env({"CLIPSTREAM_BACKGROUND_NICE": "0"}).background_nice == 0
    assert Settings.from_env({"CLIPSTREAM_BACKGROUND_NICE": "19"}).background_nice == 19
    for bad in ("20", "-5", "low"):
        with pytest.raises(ConfigError, match="CLIPSTREAM_BACKGROUND_NICE"):
            Settings.from_env({"CLIPSTREAM_BACKGROUND_NICE": bad})


def _lowered(asked: list[int], started_at: int = 0) -> list[int]:
    """What ``lower_priority`` answers for each of ``asked`` in turn, in a child process started
    at nice ``started_at``."""
    code = (
        "from api.cli.runner import lower_priority\n"
        f"print(*(lower_priority(n) for n in {asked!r}))\n"
    )
    result = subprocess.run(
        ["nice", "-n", str(started_at), sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return [int(n) for n in result.stdout.split()]


def test_lower_priority_lowers_and_never_raises() -> None:
    if os.getpriority(os.PRIO_PROCESS, 0) != 0:
        pytest.skip("the test process does not run at nice 0")
    assert _lowered([7]) == [7]
    # Asked for less after more: stays at the lower priority (raising it back needs privilege,
    # and an operator who started a role lower meant it).
    assert _lowered([7, 3]) == [7, 7]
    assert _lowered([0]) == [0]
    assert _lowered([10], started_at=15) == [15]
