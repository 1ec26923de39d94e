"""Running clipstream roles as real processes for end-to-end and fault tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx

from engine.credentials import generate

ROOT = Path(__file__).resolve().parent.parent

# Secrets of the role processes a test session starts: drawn once per session, as strong as a
# deployment's must be (on Redis the API refuses weak ones).
ADMIN_TOKEN = generate("adm_")
JWT_SECRET = generate()
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def role_env(redis_url: str, **overrides: str) -> dict[str, str]:
    """The environment of a role process talking to ``redis_url`` with test-friendly timings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPSTREAM_")}
    env.update(
        CLIPSTREAM_REDIS_URL=redis_url,
        CLIPSTREAM_PARTITIONS="4",
        CLIPSTREAM_SIM_LATENCY_MS="0",
        CLIPSTREAM_LEASE_MS="1500",
        CLIPSTREAM_HEARTBEAT_MS="300",
        CLIPSTREAM_CLAIM_INTERVAL_MS="200",
        CLIPSTREAM_ADMIN_TOKEN=ADMIN_TOKEN,
        CLIPSTREAM_JWT_SECRET=JWT_SECRET,
        # Limits far above what a test sends: the tests of the limits set their own.
        CLIPSTREAM_RATE_KEY="1000000/minute",
        CLIPSTREAM_RATE_IP="1000000/minute",
        CLIPSTREAM_RATE_AUTH_FAILURES="100000/minute",
        PYTHONUNBUFFERED="1",
    )
    env.update(overrides)
    return env


class Role:
    """One ``clipstream <role>`` process; its output goes to a log file kept for failures."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api.cli", *args],
            cwd=ROOT,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no cleanup, no goodbye, as in a crash."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


@contextmanager
def roles(specs: list[list[str]], env: Mapping[str, str], log_dir: Path) -> Iterator[list[Role]]:
    """Start one process per spec (e.g. ``["worker"]``); stop them all at the end."""
    started: list[Role] = []
    try:
        for i, spec in enumerate(specs):
            started.append(Role(spec, env, log_dir / f"{i}-{spec[0]}.log"))
        yield started
    finally:
        for role in started:
            role.terminate()


def wait_http(url: str, deadline_s: float = 30.0, role: Role | None = None) -> None:
    """Wait until ``url`` answers 200 (the API process is up)."""
    end = time.monotonic() + deadline_s
    while True:
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if role is not None and role.proc.poll() is not None:
            raise RuntimeError(f"{role.args} exited early:\n{role.output()}")
        if time.monotonic() > end:
            detail = role.output() if role else ""
            raise TimeoutError(f"{url} did not answer within {deadline_s}s\n{detail}")
        time.sleep(0.05)
