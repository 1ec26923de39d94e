"""``clipstream dead-letters [list] | retry ID | retry --all``: the commands in-process on fakeredis
and a private real Redis, and the real command as a process against Redis."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import anyio
import pytest

from api.cli import build_parser, operators
from engine.log.events import ExecutionCompleted, ExecutionRetried
from engine.run import revive
from engine.run.worker import Worker
from engine.runtime import Runtime
from engine.settings import Settings
from tests.integration.test_cli import cli as run_cli
from tests.integration.test_dead_letter_retry import dead_lettered
from tests.integration.test_worker import of_type
from tests.processes import role_env
from tests.servers import RedisServer

pytestmark = pytest.mark.anyio


@pytest.fixture
async def cli_runtime(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    """The commands open the test's runtime (and leave it open for the test)."""

    async def open_runtime(cls: type[Runtime], settings: Settings) -> Runtime:
        return runtime

    async def keep_open(self: Runtime) -> None:
        return None

    monkeypatch.setattr(Runtime, "open", classmethod(open_runtime))
    monkeypatch.setattr(Runtime, "close", keep_open)
    return runtime


def test_the_parser_takes_an_id_or_all_and_never_both() -> None:
    parser = build_parser()
    args = parser.parse_args(["dead-letters", "retry", "exc_p1_x"])
    assert (args.execution_id, args.all) == ("exc_p1_x", False)
    assert parser.parse_args(["dead-letters", "retry", "--all"]).all
    assert (
        parser.parse_args(["dead-letters"]).handler
        is parser.parse_args(["dead-letters", "list"]).handler
    )
    for bad in (["dead-letters", "retry"], ["dead-letters", "retry", "exc_p1_x", "--all"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


async def test_retry_from_the_cli_resumes_the_execution_to_done(
    cli_runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    req = await dead_lettered(cli_runtime)
    settings = cli_runtime.settings
    assert await operators._dead_letters(settings) == 0
    listed = capsys.readouterr().out
    assert req.execution_id in listed
    assert "deliveries=" in listed

    assert await operators._retry(settings, req.execution_id, "cli:ops@box") == 0
    assert f"retried {req.execution_id}" in capsys.readouterr().out
    await Worker(cli_runtime).run_until_idle()
    history = await cli_runtime.store.log.history(req.execution_id)
    assert isinstance(history[-1], ExecutionCompleted)
    assert [e.requested_by for e in of_type(history, ExecutionRetried)] == ["cli:ops@box"]

    # Again: it is not dead-lettered any more, and the command says so with exit code 1.
    assert await operators._retry(settings, req.execution_id, "cli:ops@box") == 1
    assert "not dead-lettered (its status is done)" in capsys.readouterr().err
    assert await operators._dead_letters(settings) == 0
    assert "no dead letters" in capsys.readouterr().out


async def test_retry_all_from_the_cli(
    cli_runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await dead_lettered(cli_runtime)
    second = await dead_lettered(cli_runtime)
    assert await operators._retry(cli_runtime.settings, None, "cli:ops") == 0
    out = capsys.readouterr().out
    assert first.execution_id in out
    assert second.execution_id in out
    await Worker(cli_runtime).run_until_idle()
    for req in (first, second):
        history = await cli_runtime.store.log.history(req.execution_id)
        assert isinstance(history[-1], ExecutionCompleted)


@pytest.mark.redis
@pytest.mark.slow
async def test_the_command_as_a_process(real_redis_server: RedisServer, settings: Settings) -> None:
    """``clipstream dead-letters retry ID`` as an operator runs it, against a real Redis."""
    from engine.connection import connect

    settings = replace(settings, redis_url=real_redis_server.url, prefix="cs-dlcli:")
    runtime = await Runtime.open(settings, connect(settings))
    try:
        req = await dead_lettered(runtime)
        env = role_env(real_redis_server.url, CLIPSTREAM_PREFIX="cs-dlcli:")

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            return run_cli(*args, env=env)

        listed = await anyio.to_thread.run_sync(cli, "dead-letters", "list")
        assert listed.returncode == 0, listed.stderr
        assert req.execution_id in listed.stdout
        done = await anyio.to_thread.run_sync(cli, "dead-letters", "retry", req.execution_id)
        assert done.returncode == 0, done.stderr
        await Worker(runtime).run_until_idle()
        history = await runtime.store.log.history(req.execution_id)
        assert isinstance(history[-1], ExecutionCompleted)
        [retried] = of_type(history, ExecutionRetried)
        assert retried.requested_by.startswith("cli:")
        again = await anyio.to_thread.run_sync(cli, "dead-letters", "retry", req.execution_id)
        assert again.returncode == 1
        assert "not dead-lettered" in again.stderr
        assert await revive.dead_letters(runtime.store) == []
    finally:
        await runtime.close()
