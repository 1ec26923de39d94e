"""What a 202 costs Redis in round trips: the request path's budget (api.rate_limits, api.auth),
counted at the client. Before the limits' pipeline it was six with an API key (two of them side
by side twice), four one after the other with a session token."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from engine.connection import RedisClient
from engine.runtime import Runtime
from tests.api.conftest import new_account

pytestmark = pytest.mark.anyio

VIDEO = "https://youtu.be/dQw4w9WgXcQ"


@contextmanager
def round_trips(redis: RedisClient) -> Iterator[list[tuple[str, ...]]]:
    """Each round trip ``redis`` makes meanwhile: the names of the commands it carried."""
    trips: list[tuple[str, ...]] = []
    client: Any = redis
    execute, pipeline = client.execute_command, client.pipeline

    async def one(*args: Any, **options: Any) -> Any:
        trips.append((str(args[0]).upper(),))
        return await execute(*args, **options)

    def pipelined(*args: Any, **options: Any) -> Any:
        pipe = pipeline(*args, **options)
        flush = pipe.execute

        async def execute_pipe(*a: Any, **o: Any) -> Any:
            trips.append(tuple(str(c[0][0]).upper() for c in pipe.command_stack))
            return await flush(*a, **o)

        pipe.execute = execute_pipe
        return pipe

    client.execute_command, client.pipeline = one, pipelined
    try:
        yield trips
    finally:
        del client.execute_command, client.pipeline


@pytest.mark.parametrize(
    ("via", "read"), [("key_auth", "GET"), ("jwt_auth", "HGET")], ids=["api key", "session"]
)
async def test_a_202_takes_three_round_trips(
    client: httpx.AsyncClient, admin: dict[str, str], runtime: Runtime, via: str, read: str
) -> None:
    """The address's limits, the credential's limit and what authentication reads of it (the
    key's record, the account's revocation instant) in one; the item; the admission script."""
    alice = await new_account(client, admin, coins=10)
    auth = getattr(alice, via)
    created = await client.post("/v1/items", json={"source": VIDEO}, headers=auth)
    path = f"/v1/items/{created.json()['item']['item_id']}/transcript"
    assert (await client.post(path, headers=auth)).status_code == 202  # scripts loaded
    with round_trips(runtime.redis) as trips:
        answer = await client.post(path, headers=auth)
    assert answer.status_code == 202, answer.text
    assert trips == [("EVALSHA", "EVALSHA", "EVALSHA", read), ("GET",), ("EVALSHA",)]
