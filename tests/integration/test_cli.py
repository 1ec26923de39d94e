"""The ``clipstream`` command as an operator runs it: a real process against a private Redis."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import jwt
import pytest
import redis

from engine.log.keys import Keys
from engine.settings import Settings
from tests.helpers import eventually
from tests.processes import ROOT, Role, role_env, roles, wait_http
from tests.servers import RedisServer, free_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _field(output: str, name: str) -> str:
    for line in output.splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in {output!r}")


def test_help_lists_every_command() -> None:
    result = cli("--help", env=role_env("redis://127.0.0.1:1/0"))
    assert result.returncode == 0
    commands = ("serve", "api", "worker", "projector", "scheduler", "replay", "status", "accounts")
    for command in commands:
        assert command in result.stdout


def test_single_roles_refuse_the_embedded_store() -> None:
    env = role_env("redis://unused")
    del env["CLIPSTREAM_REDIS_URL"]
    result = cli("worker", env=env)
    assert result.returncode == 2
    assert "needs CLIPSTREAM_REDIS_URL" in result.stderr


def test_an_invalid_setting_stops_the_process_naming_it() -> None:
    env = role_env("redis://127.0.0.1:1/0", CLIPSTREAM_LEASE_MS="soon")
    result = cli("status", env=env)
    assert result.returncode == 2
    assert "CLIPSTREAM_LEASE_MS" in result.stderr


def test_an_invalid_provider_setting_stops_the_process_naming_it() -> None:
    env = role_env("redis://127.0.0.1:1/0", CLIPSTREAM_PROVIDERS="llm=carrier-pigeon")
    result = cli("status", env=env)
    assert result.returncode == 2
    assert "CLIPSTREAM_PROVIDERS" in result.stderr


def test_accounts_lifecycle(real_redis_server: RedisServer) -> None:
    env = role_env(real_redis_server.url)
    created = cli("accounts", "create", "--name", "ops", "--coins", "2.5", env=env)
    assert created.returncode == 0, created.stderr
    account_id = _field(created.stdout, "account_id")
    api_key = _field(created.stdout, "api_key")
    assert _field(created.stdout, "balance_coins") == "2.5"

    for _ in range(2):  # the same credit id twice credits once
        credited = cli("accounts", "credit", account_id, "--coins", "1", "--credit-id", "inv-1",
                       env=env)  # fmt: skip
        assert credited.returncode == 0, credited.stderr
        assert _field(credited.stdout, "balance_coins") == "3.5"

    audited = cli("accounts", "audit", account_id, env=env)
    assert audited.returncode == 0, audited.stderr
    assert _field(audited.stdout, "balance_coins") == "3.5"
    assert _field(audited.stdout, "credits_coins") == "3.5"
    assert _field(audited.stdout, "status").startswith("ok")
    # Money that moved with no ledger entry: the audit says so and exits 1.
    settings = Settings.from_env(env)
    with redis.Redis.from_url(real_redis_server.url) as client:
        client.incrby(Keys(settings.prefix, settings.partitions).balance(account_id), 1)
    tampered = cli("accounts", "audit", account_id, env=env)
    assert tampered.returncode == 1
    assert "balance is 3500001 but credits - charges + releases = 3500000" in tampered.stdout

    token = cli("accounts", "token", account_id, "--ttl", "600", env=env).stdout.strip()
    ended = cli("accounts", "revoke-sessions", account_id, env=env)
    assert ended.returncode == 0, ended.stderr
    assert f"revoked every session of {account_id}" in ended.stdout
    with redis.Redis.from_url(real_redis_server.url) as client:
        keys = Keys(settings.prefix, settings.partitions)
        after = int(client.hget(keys.account(account_id), "sessions_after") or 0)
        [(_, fields)] = client.xrange(keys.revocations)
    assert fields == {b"account": account_id.encode(), b"after": str(after).encode()}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["iat_ms"] <= after  # the token minted before is revoked
    too_long = cli("accounts", "token", account_id, "--ttl", "86401", env=env)
    assert too_long.returncode == 1
    assert "at most 86400 s" in too_long.stderr
    unknown = cli("accounts", "revoke-sessions", "acc_doesnotexist", env=env)
    assert unknown.returncode == 1

    revoked = cli("accounts", "revoke", api_key, env=env)
    assert revoked.returncode == 0, revoked.stderr
    assert account_id in revoked.stdout
    again = cli("accounts", "revoke", api_key, env=env)
    assert again.returncode == 1


def test_status_and_replay_on_an_empty_store(real_redis_server: RedisServer) -> None:
    # The session's private server is shared with other tests: start from an empty one.
    with redis.Redis.from_url(real_redis_server.url) as client:
        client.flushall()
    env = role_env(real_redis_server.url)
    status = cli("status", env=env)
    assert status.returncode == 0, status.stderr
    assert "partitions: 4" in status.stdout
    replay = cli("replay", "--switch", "--drop-previous", env=env)
    assert replay.returncode == 0, replay.stderr
    assert "identical" in replay.stdout
    assert "switched to projection version" in replay.stdout


def test_the_api_on_redis_refuses_to_start_without_its_secrets(
    real_redis_server: RedisServer,
) -> None:
    env = role_env(real_redis_server.url)
    del env["CLIPSTREAM_ADMIN_TOKEN"], env["CLIPSTREAM_JWT_SECRET"]
    result = cli("api", "--port", "1", env=env)
    assert result.returncode == 2, result.stderr
    assert "CLIPSTREAM_ADMIN_TOKEN and CLIPSTREAM_JWT_SECRET must be set" in result.stderr
    assert "secrets.token_urlsafe" in result.stderr  # and says how to make them


@pytest.mark.parametrize("role", ["api", "worker"])
def test_a_weak_secret_on_redis_stops_every_role_without_echoing_it(
    real_redis_server: RedisServer, role: str
) -> None:
    weak = "dev-jwt-secret-not-secret-0123456789"  # the old compose default
    env = role_env(real_redis_server.url, CLIPSTREAM_JWT_SECRET=weak)
    result = cli(role, env=env)
    assert result.returncode == 2, result.stderr
    assert "CLIPSTREAM_JWT_SECRET is too weak" in result.stderr
    assert weak not in result.stderr + result.stdout


def test_serve_prints_an_admin_token_only_when_it_made_one(tmp_path: Path) -> None:
    for configured in (False, True):
        env = role_env("redis://unused")
        del env["CLIPSTREAM_REDIS_URL"]
        if not configured:
            del env["CLIPSTREAM_ADMIN_TOKEN"]
        port = free_port()
        with roles([["serve", "--port", str(port)]], env, tmp_path) as [serve]:
            wait_http(f"http://127.0.0.1:{port}/healthz", role=serve)
            banner = serve.output()
        assert ("admin token:" in banner) is not configured, banner
        assert env.get("CLIPSTREAM_ADMIN_TOKEN", "absent") not in banner
        if not configured:
            token = _field(banner.replace("  admin token:", "admin_token:"), "admin_token")
            assert token.startswith("adm_")
        (tmp_path / "0-serve.log").unlink()


def _nice(pid: int) -> int:
    """The nice value a process runs at (/proc/PID/stat, field 19)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[16])


def _runs_at_nice_0() -> bool:
    return Path("/proc/self/stat").exists() and _nice(os.getpid()) == 0


@pytest.mark.anyio
async def test_the_background_roles_lower_their_priority_and_the_api_keeps_its_own(
    real_redis_server: RedisServer, tmp_path: Path
) -> None:
    if not _runs_at_nice_0():
        pytest.skip("needs /proc and a test process at nice 0")
    port = free_port()
    env = role_env(real_redis_server.url, CLIPSTREAM_BACKGROUND_NICE="9")
    specs = [["worker"], ["projector"], ["scheduler"], ["api", "--port", str(port)]]
    with roles(specs, env, tmp_path) as started:
        wait_http(f"http://127.0.0.1:{port}/healthz", role=started[-1])
        for role in started[:-1]:  # each logs "... started" once its runtime is open
            await eventually(functools.partial(_said_started, role))
        assert [_nice(role.proc.pid) for role in started] == [9, 9, 9, 0]


async def _said_started(role: Role) -> bool:
    return "started" in role.output()
