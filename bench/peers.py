"""The peers, in the same sitting as our own figures: taskiq's stream broker and Dramatiq (one
worker process each, drained jobs/s) and the topology's bare ceiling (``ceiling_spike.py``,
executions/s with every view current), from the peer harness kept beside the project
(``../shared/peers`` by default, or ``--peers-dir`` / ``CLIPSTREAM_PEERS_DIR``).

Each is run ``rounds`` times, the peers taking turns (taskiq, Dramatiq, the ceiling, taskiq …) so
a drift of the box touches them alike, and its figure is the median: on a 2-core box one drain
moves by a tenth or more from one run to the next.

The harness runs from a copy in a temporary directory, against a private redis-server on a free
port. Its Python packages live in a venv outside the repository (``--peers-venv`` or
``CLIPSTREAM_PEERS_VENV``; default ``$XDG_CACHE_HOME/clipstream-peers-venv``, set up as the
harness's README says; taskiq in its nested ``taskiq-latest`` venv). Whatever is missing is
reported and recorded as null: the bench never fails for a peer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import redis_server

ROOT = Path(__file__).resolve().parent.parent
PEERS = {  # name: (python inside the venv, run_peer.py arguments)
    "taskiq-stream": ("taskiq-latest/bin/python", ["taskiq", "stream"]),
    "dramatiq-p1": ("bin/python", ["dramatiq", "p1"]),
}
_CEILING = re.compile(r"-> ([\d,]+) executions/s end to end")
_TIMEOUT_S = 240


def default_peers_dir() -> Path:
    """``$CLIPSTREAM_PEERS_DIR``, else ``shared/peers`` beside the checkout (or beside the main
    checkout, when this one is a git worktree elsewhere)."""
    if os.environ.get("CLIPSTREAM_PEERS_DIR"):
        return Path(os.environ["CLIPSTREAM_PEERS_DIR"])
    bases = [ROOT]
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if common:
            bases.append(Path(common).parent)
    except OSError:
        pass
    for base in bases:
        if (base.parent / "shared" / "peers").is_dir():
            return base.parent / "shared" / "peers"
    return ROOT.parent / "shared" / "peers"


def default_peers_venv() -> Path:
    if os.environ.get("CLIPSTREAM_PEERS_VENV"):
        return Path(os.environ["CLIPSTREAM_PEERS_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "clipstream-peers-venv"


@dataclass
class PeerFigures:
    drained_per_s: dict[str, float | None] = field(default_factory=dict)  # the median of runs
    ceiling_e2e_per_s: float | None = None  # the median of ceiling_runs
    notes: list[str] = field(default_factory=list)
    runs: dict[str, list[float]] = field(default_factory=dict)  # each peer's rates, in order
    ceiling_runs: list[float] = field(default_factory=list)

    @property
    def best(self) -> tuple[str | None, float | None]:
        found = [(rate, name) for name, rate in self.drained_per_s.items() if rate is not None]
        if not found:
            return None, None
        rate, name = max(found)
        return name, rate


def run_peers(
    peers_dir: Path, venv: Path, work: Path, *, n: int, ceiling_n: int, rounds: int = 1
) -> PeerFigures:
    """``rounds`` turns of each peer (``n`` jobs drained by one worker process) and the ceiling
    prototype; each figure the median of its runs (None when none ran)."""
    out = PeerFigures()
    if not (peers_dir / "run_peer.py").exists():
        out.notes.append(f"no peer harness at {peers_dir.name!r} (--peers-dir): peers not run")
        out.drained_per_s = dict.fromkeys(PEERS)
        return out
    harness = work / "peers"
    shutil.copytree(peers_dir, harness, ignore=shutil.ignore_patterns("results", "__pycache__"))
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    out.runs = {name: [] for name in PEERS}
    with redis_server() as server:
        env["PEERS_REDIS_PORT"] = str(server.port)
        for _ in range(rounds):
            for name, (python, args) in PEERS.items():
                rate = _one_peer(harness, venv / python, args, name, n, env, out)
                if rate is not None:
                    out.runs[name].append(rate)
            ceiling = _ceiling(harness, server.port, ceiling_n, env, out)
            if ceiling is not None:
                out.ceiling_runs.append(ceiling)
    out.notes = list(dict.fromkeys(out.notes))  # a peer that cannot run says so once
    out.drained_per_s = {name: _median(rates) for name, rates in out.runs.items()}
    out.ceiling_e2e_per_s = _median(out.ceiling_runs)
    return out


def _median(rates: list[float]) -> float | None:
    return statistics.median(rates) if rates else None


def _one_peer(
    harness: Path,
    python: Path,
    args: list[str],
    name: str,
    n: int,
    env: dict[str, str],
    out: PeerFigures,
) -> float | None:
    if not python.exists():
        out.notes.append(f"{name}: no venv python (--peers-venv): not run")
        return None
    result = harness / "results" / f"{name}.json"
    result.parent.mkdir(exist_ok=True)
    cmd = [str(python), "run_peer.py", *args, "--n", str(n), "--lat-n", "200"]
    try:
        subprocess.run(
            [*cmd, "--out", str(result)],
            cwd=harness,
            env=env,
            timeout=_TIMEOUT_S,
            capture_output=True,
            check=False,
        )
        drain = json.loads(result.read_text()).get("drain", {})
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        out.notes.append(f"{name}: failed ({type(exc).__name__}: {exc})")
        return None
    rate = drain.get("jobs_per_s")
    if rate is None or not drain.get("complete"):
        out.notes.append(f"{name}: drain incomplete ({drain})")
        return None
    return float(rate)


def _ceiling(
    harness: Path, port: int, n: int, env: dict[str, str], out: PeerFigures
) -> float | None:
    try:
        run = subprocess.run(
            [sys.executable, "ceiling_spike.py", "--port", str(port), "--n", str(n)],
            cwd=harness,
            env=env,
            timeout=_TIMEOUT_S,
            capture_output=True,
            text=True,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        out.notes.append(f"ceiling_spike: failed ({type(exc).__name__}: {exc})")
        return None
    found = _CEILING.search(run.stdout)
    if found is None:
        out.notes.append(f"ceiling_spike: no figure in its output ({run.stderr[-300:]!r})")
        return None
    return float(found.group(1).replace(",", ""))
