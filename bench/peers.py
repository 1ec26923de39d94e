"""The peers, in the same sitting as our own figures: taskiq's stream broker and Dramatiq (one
worker process each, drained jobs/s) and the topology's bare ceiling (``ceiling_spike.py``,
executions/s with every view current), from the peer harness kept beside the project
(``../shared/peers`` by default, or ``--peers-dir`` / ``CLIPSTREAM_PEERS_DIR``).

Each is run in rounds, the peers taking turns (taskiq, Dramatiq, the ceiling, taskiq …), and its
figure is the median: on a 2-core box one drain moves by a tenth or more from one run to the
next, and the box's speed drifts by a fifth over minutes. bench.run runs a round after each of
its own one-worker drains, so both are measured under the same drift.

The harness runs from a copy in a temporary directory, against a private redis-server on a free
port. Its Python packages live in a venv outside the repository (``--peers-venv`` or
``CLIPSTREAM_PEERS_VENV``; default ``$XDG_CACHE_HOME/clipstream-peers-venv``, set up as the
harness's README says; taskiq in its nested ``taskiq-latest`` venv). The versions of each peer's
packages (its own, redis-py and hiredis) are written beside its figure: a venv set up again may
resolve newer ones, and a peer's rate moves with them. Whatever is missing is reported and
recorded as null: the bench never fails for a peer.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bench.common import Report, runs_note
from tests.servers import redis_server

ROOT = Path(__file__).resolve().parent.parent


class Peer(NamedTuple):
    python: str  # inside the venv
    args: list[str]  # of run_peer.py
    packages: tuple[str, ...]  # the distributions whose versions are written beside its figure


PEERS = {
    "taskiq-stream": Peer(
        "taskiq-latest/bin/python",
        ["taskiq", "stream"],
        ("taskiq", "taskiq-redis", "redis", "hiredis"),
    ),
    "dramatiq-p1": Peer("bin/python", ["dramatiq", "p1"], ("dramatiq", "redis", "hiredis")),
}
# Run by a peer's venv python: the installed version of each distribution named (null if absent).
_VERSIONS = (
    "import importlib.metadata as m, json, sys\n"
    "def version(name):\n"
    "    try:\n"
    "        return m.version(name)\n"
    "    except m.PackageNotFoundError:\n"
    "        return None\n"
    "print(json.dumps({name: version(name) for name in sys.argv[1:]}))\n"
)
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
    # Each peer's packages and their versions in its venv (absent: the peer's venv is missing).
    versions: dict[str, dict[str, str | None]] = field(default_factory=dict)

    @property
    def best(self) -> tuple[str | None, float | None]:
        found = [(rate, name) for name, rate in self.drained_per_s.items() if rate is not None]
        if not found:
            return None, None
        rate, name = max(found)
        return name, rate


class PeerRuns:
    """The peer harness, run a round at a time so that its rounds can take turns with ours
    (bench.run): a context manager holding the harness's copy and its redis-server. Each
    :meth:`round` drains ``n`` jobs with each peer's one worker process, then runs the ceiling
    prototype on ``ceiling_n`` executions; :meth:`figures` gives the medians."""

    def __init__(self, peers_dir: Path, venv: Path, work: Path, *, n: int, ceiling_n: int) -> None:
        self.peers_dir, self.venv, self.work = peers_dir, venv, work
        self.n, self.ceiling_n = n, ceiling_n
        self.rounds = 0
        self._out = PeerFigures(runs={name: [] for name in PEERS})
        self._env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        self._stack = contextlib.ExitStack()
        self._port: int | None = None  # of the harness's redis-server; None: no harness

    def __enter__(self) -> PeerRuns:
        if not (self.peers_dir / "run_peer.py").exists():
            self._out.notes.append(
                f"no peer harness at {self.peers_dir.name!r} (--peers-dir): peers not run"
            )
            return self
        harness = self.work / "peers"
        ignore = shutil.ignore_patterns("results", "__pycache__")
        shutil.copytree(self.peers_dir, harness, ignore=ignore)
        self._port = self._stack.enter_context(redis_server()).port
        self._env["PEERS_REDIS_PORT"] = str(self._port)
        for name, peer in PEERS.items():
            found = _versions(self.venv / peer.python, peer.packages)
            if found is not None:
                self._out.versions[name] = found
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def round(self) -> None:
        """Each peer once, then the ceiling prototype."""
        self.rounds += 1
        if self._port is None:
            return
        out, harness = self._out, self.work / "peers"
        for name, (python, args, _) in PEERS.items():
            rate = _one_peer(harness, self.venv / python, args, name, self.n, self._env, out)
            if rate is not None:
                out.runs[name].append(rate)
        ceiling = _ceiling(harness, self._port, self.ceiling_n, self._env, out)
        if ceiling is not None:
            out.ceiling_runs.append(ceiling)

    def figures(self) -> PeerFigures:
        """Each peer's and the ceiling's median over the rounds run (None where none ran)."""
        out = self._out
        out.notes = list(dict.fromkeys(out.notes))  # a peer that cannot run says so once
        out.drained_per_s = {name: _median(rates) for name, rates in out.runs.items()}
        out.ceiling_e2e_per_s = _median(out.ceiling_runs)
        return out


def _versions(python: Path, packages: tuple[str, ...]) -> dict[str, str | None] | None:
    """The installed version of each of ``packages`` for ``python`` (None when it cannot run)."""
    if not python.exists():
        return None
    try:
        run = subprocess.run(
            [str(python), "-c", _VERSIONS, *packages],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found = json.loads(run.stdout)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return {name: found.get(name) for name in packages}


def versions_text(versions: dict[str, str | None]) -> str:
    """``taskiq 0.13.0, redis 8.2.0, hiredis absent`` …"""
    return ", ".join(f"{name} {version or 'absent'}" for name, version in versions.items())


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


def report_peers(report: Report, peers: PeerFigures) -> None:
    """The peers' figures, their package versions and the ceiling: rows of the table and keys
    of latest.json."""
    fig = report.figures
    name, best_rate = peers.best
    fig["peer_best_per_s"] = best_rate
    fig["peer_best"] = name
    fig["peers_per_s"] = peers.drained_per_s
    fig["ceiling_e2e_per_s"] = peers.ceiling_e2e_per_s
    fig["peer_notes"] = peers.notes
    fig["peer_versions"] = peers.versions
    for peer, peer_rate in peers.drained_per_s.items():
        versions = peers.versions.get(peer)
        detail = [runs_note(peers.runs.get(peer, [])), versions_text(versions) if versions else ""]
        report.add(
            f"peer: {peer}, one worker process, jobs drained/s",
            "—" if peer_rate is None else f"{peer_rate:,.0f}",
            "; ".join(part for part in detail if part),
        )
    report.add(
        "ceiling_spike.py: executions/s with every view current",
        "—" if peers.ceiling_e2e_per_s is None else f"{peers.ceiling_e2e_per_s:,.0f}",
        "; ".join(note for note in [runs_note(peers.ceiling_runs), *peers.notes] if note),
    )
