"""The operator's surface as a newcomer meets it: ``serve`` on the embedded store, then the
operator commands in a second process with the export line it printed; and ``status --json`` on a
private Redis."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.test_cli import cli
from tests.processes import ROOT, role_env, roles, wait_http
from tests.servers import RedisServer, free_port

pytestmark = pytest.mark.slow

VIDEO = "https://youtu.be/dQw4w9WgXcQ"


def _banner_field(banner: str, name: str) -> str:
    m = re.search(rf"^\s*{re.escape(name)}:\s+(\S+)", banner, re.MULTILINE)
    assert m, f"no {name} in the banner:\n{banner}"
    return m.group(1)


def _export(banner: str) -> dict[str, str]:
    """The variables of the banner's ``export CLIPSTREAM_REDIS_URL=…`` line."""
    line = next((x for x in banner.splitlines() if "export CLIPSTREAM_REDIS_URL=" in x), None)
    assert line is not None, f"no export line in the banner:\n{banner}"
    pairs = line.strip().removeprefix("export ").split()
    return dict(pair.split("=", 1) for pair in pairs)


def test_operator_commands_work_against_serve(tmp_path: Path) -> None:
    # A long lease time: serve's worker stays live to `status` whatever the box's load.
    env = role_env("redis://unused", CLIPSTREAM_LEASE_MS="600000")
    for name in ("CLIPSTREAM_REDIS_URL", "CLIPSTREAM_ADMIN_TOKEN", "CLIPSTREAM_JWT_SECRET"):
        del env[name]  # the documented first run: nothing configured
    port = free_port()
    with roles([["serve", "--port", str(port)]], env, tmp_path) as [serve]:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", role=serve)
        banner = serve.output()
        exported = _export(banner)
        assert exported["CLIPSTREAM_REDIS_URL"].startswith("redis://127.0.0.1:")
        key = _banner_field(banner, "api key")
        account = _banner_field(banner, "demo account")
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base, timeout=10) as http:
            item = http.post("/v1/items", json={"source": VIDEO}, headers=auth).json()
            xid = http.post(
                f"/v1/items/{item['item']['item_id']}/transcript", json={}, headers=auth
            ).json()["execution"]["execution_id"]
            deadline = time.monotonic() + 30
            while http.get(f"/v1/executions/{xid}", headers=auth).json()["execution"][
                "status"
            ] not in ("done", "error"):
                assert time.monotonic() < deadline, "the execution did not end"
                time.sleep(0.05)

        operator = {**env, **exported}
        status = cli("status", env=operator)
        assert status.returncode == 0, status.stderr
        assert "partitions: 4" in status.stdout
        assert "live workers: 1" in status.stdout
        # serve's archiver holds the archive leases: status must not claim nothing is trimmed.
        assert "archive: NONE" not in status.stdout
        assert "the logs are archived and trimmed by archiver arc_" in status.stdout
        as_json = cli("status", "--json", env=operator)
        assert as_json.returncode == 0, as_json.stderr
        parsed = json.loads(as_json.stdout)
        assert sum(p["log_entries"] for p in parsed["partition"]) > 0

        history = cli("history", xid, env=operator)
        assert history.returncode == 0, history.stderr
        types = [json.loads(line)["type"] for line in history.stdout.splitlines()]
        assert types[0] == "ExecutionRequested"
        assert types[-1] == "ExecutionCompleted"

        dead = cli("dead-letters", env=operator)
        assert dead.returncode == 0, dead.stderr
        assert "no dead letters" in dead.stdout

        token = cli("accounts", "token", account, env=operator)
        assert token.returncode == 0, token.stderr
        jwt = token.stdout.strip().splitlines()[-1]
        me = httpx.get(f"{base}/v1/me", headers={"Authorization": f"Bearer {jwt}"}, timeout=10)
        assert me.status_code == 200, me.text  # minted beside serve, accepted by it

        replay = cli("replay", env=operator)
        assert replay.returncode == 0, replay.stderr
        assert "identical" in replay.stdout

        with subprocess.Popen(
            [sys.executable, "-m", "api.cli", "tail", "--from-start"],
            cwd=ROOT,
            env=operator,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as tail:
            try:
                assert tail.stdout is not None
                first = tail.stdout.readline()  # blocks until tail prints the first entry
                assert xid in first, first
            finally:
                tail.send_signal(signal.SIGTERM)
                assert tail.wait(timeout=20) == 0


def test_serve_without_a_store_port(tmp_path: Path) -> None:
    env = role_env("redis://unused")
    del env["CLIPSTREAM_REDIS_URL"]
    port = free_port()
    with roles([["serve", "--port", str(port), "--store-port", "-1"]], env, tmp_path) as [serve]:
        wait_http(f"http://127.0.0.1:{port}/healthz", role=serve)
        banner = serve.output()
    assert "CLIPSTREAM_REDIS_URL=" not in banner
    assert "store port:" not in banner


@pytest.mark.redis
def test_status_json_on_redis(real_redis_server: RedisServer) -> None:
    import redis

    from engine.log.ids import new_execution_id
    from engine.log.keys import Keys

    # A lease time long enough that the worker's beat below stays live whatever the box's load.
    env = role_env(
        real_redis_server.url, CLIPSTREAM_PREFIX="status-json:", CLIPSTREAM_LEASE_MS="3600000"
    )
    assert cli("status", env=env).returncode == 0  # creates the store (4 partitions)
    keys = Keys("status-json:", 4)
    owner = "acc_01jd0000000000000000"
    p = keys.partition(owner)
    queued = new_execution_id(p, now_ms=int(time.time() * 1000) - 90_000)  # waiting 90 s
    with redis.Redis.from_url(real_redis_server.url) as client:
        client.rpush(keys.ring(p), owner)
        client.rpush(keys.ready(owner), queued)
        client.hset(keys.workers, "w-status", int(time.time() * 1000))
    result = cli("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["partitions"] == 4
    assert data["redis_memory"]["used_bytes"] > 0
    row = data["partition"][p]
    assert row["partition"] == p
    assert row["queued"] == 1
    assert row["oldest_pending_ms"] >= 90_000
    assert [w["worker_id"] for w in data["workers"]] == ["w-status"]
    table = cli("status", env=env)
    assert "redis memory:" in table.stdout
    assert "w-status" in table.stdout
    # Partition p's row: 1 queued, waiting 90 s and more (up to 119 s: how long the CLI took).
    row_re = rf"^\s+{p}\s+\d+\s+1\s+(9\d|1[01]\d)\.\ds\s"
    assert re.search(row_re, table.stdout, re.MULTILINE), table.stdout
