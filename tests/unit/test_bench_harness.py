"""The benchmark harness's own behaviour: settings given to every role, and the load generator
recording how late it wrote each request (so a starved generator is told from a slow server)."""

from __future__ import annotations

import asyncio

import pytest

from bench import common
from bench.common import role_settings, script_names
from bench.http_load import build_request, open_loop
from bench.worker_cost import slowlog_table

pytestmark = pytest.mark.anyio


def test_role_env_settings_are_named_with_or_without_their_prefix() -> None:
    assert role_settings(["BACKGROUND_NICE=0", "CLIPSTREAM_BATCH=50"]) == {
        "CLIPSTREAM_BACKGROUND_NICE": "0",
        "CLIPSTREAM_BATCH": "50",
    }
    for bad in ("BACKGROUND_NICE", "=3"):
        with pytest.raises(ValueError, match="NAME=VALUE"):
            role_settings([bad])


def test_role_env_settings_win_over_a_scenarios_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "ROLE_ENV", {"CLIPSTREAM_BACKGROUND_NICE": "0"})
    env = common.bench_role_env(
        "redis://127.0.0.1:1/0", CLIPSTREAM_BACKGROUND_NICE="5", CLIPSTREAM_BATCH="7"
    )
    assert env["CLIPSTREAM_BACKGROUND_NICE"] == "0"
    assert env["CLIPSTREAM_BATCH"] == "7"


async def test_the_load_generator_records_each_requests_lateness() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
                writer.write(b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}")
        except asyncio.IncompleteReadError:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    request = build_request("POST", "/x", f"127.0.0.1:{port}", {}, b"{}")
    async with server:
        result = await open_loop("127.0.0.1", port, request, rate=2_000, total=40, connections=4)
    assert result.statuses == {202: 40}
    assert len(result.latencies_ms) == len(result.late_ms) == 40


def test_the_drains_lag_is_counted_afterwards_from_the_polled_positions() -> None:
    from bench.drain import _most_behind

    # Partition 0 holds 1-0 .. 5-0, partition 1 holds 3-0 and 3-1.
    ids = {0: [(n, 0) for n in range(1, 6)], 1: [(3, 0), (3, 1)]}
    positions = [
        ({0: "0-0", 1: "0-0"}, {0: "2-0", 1: "0-0"}),  # 2 behind
        ({0: "1-0", 1: "0-0"}, {0: "5-0", 1: "3-1"}),  # 4 + 2 behind
        ({0: "5-0", 1: "3-0"}, {0: "5-0", 1: "3-1"}),  # 0 + 1
    ]
    assert _most_behind(positions, ids) == 6
    assert _most_behind([], ids) == 0


def test_the_slowlog_table_sums_by_command_and_names_the_scripts() -> None:
    append = next(sha for sha, name in script_names().items() if name == "event_log.APPEND_BATCH")
    entries = [
        {"command": f"EVALSHA {append} 5 k1 k2".encode(), "duration": 300},
        {"command": f"EVALSHA {append} 5 k1 k2".encode(), "duration": 100},
        {"command": b"XADD log * e payload", "duration": 10},
        {"command": "EVALSHA 0123456789abcdef 1 k", "duration": 4},
    ]
    rows = [line for line in slowlog_table(entries, n=2).splitlines() if line.startswith("  ")]
    assert rows == [
        "  event_log.APPEND_BATCH              1.00 calls    200.0 us",
        "  XADD                                0.50 calls      5.0 us",
        "  script 0123456789                   0.50 calls      2.0 us",
    ]
