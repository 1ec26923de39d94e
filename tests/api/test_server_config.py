"""How `clipstream api` configures its HTTP server (api.cli.roles)."""

from __future__ import annotations

import pytest

from api.cli.roles import _uvicorn_server
from engine.connection import embedded
from engine.runtime import Runtime
from engine.settings import Settings

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("env", "logged"), [({}, False), ({"CLIPSTREAM_ACCESS_LOG": "1"}, True)])
async def test_a_line_per_request_only_when_the_access_log_is_asked_for(
    env: dict[str, str], logged: bool
) -> None:
    runtime = await Runtime.open(Settings.from_env(env), embedded())
    try:
        assert _uvicorn_server(runtime, "127.0.0.1", 0).config.access_log is logged
    finally:
        await runtime.close()
