"""deploy/: the Prometheus config and alerting rules pass promtool (its checks and the rules' own
unit tests, deploy/alerts_test.yml), and the Grafana dashboard is JSON Grafana can load.

promtool comes with Debian's ``prometheus`` package (.ci/run installs it); without it the promtool
tests are skipped, unless CLIPSTREAM_REQUIRE_REDIS=1 (CI), where that is a failure.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.processes import ROOT
from tests.servers import unavailable

DEPLOY = ROOT / "deploy"


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool is not on PATH (apt-get install prometheus)")
    return found


@pytest.mark.parametrize(
    "args",
    [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
        ["check", "config", "prometheus.yml"],
    ],
)
def test_promtool_accepts_the_deploy_files(args: list[str]) -> None:
    result = subprocess.run(
        [_promtool(), *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    board = json.loads((DEPLOY / "grafana" / "clipstream.json").read_text())
    assert board["uid"] == "clipstream"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    queried = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    assert queried
    assert all("clipstream_" in expr for expr in queried)
    # Store gauges are served alike by every role: never summed over instances unaggregated.
    for gauge in ("clipstream_queue_depth", "clipstream_projection_lag_seconds"):
        for expr in queried:
            if gauge in expr:
                assert f"max by (partition) ({gauge})" in expr, expr
