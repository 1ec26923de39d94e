"""Sessions that end (api.sessions, DESIGN §8) over real sockets: a WebSocket or SSE stream is
closed (4401; SSE: a ``closed`` event with the reason) when its token expires or its account's
sessions are revoked, in every API process; the revoked tokens stop working on REST too, new
ones work; a token's lifetime is capped. An SSE stream opened with an API key is closed when
that key is revoked. Verdicts never depend on timing: expiry is reached by
moving the hub's clock, not by waiting."""

from __future__ import annotations

from dataclasses import replace

import anyio
import httpx
import jwt
import orjson
import pytest
from websockets.exceptions import ConnectionClosed

from api.auth import AUDIENCE, ISSUER, mint_session_token
from api.realtime.subscription import KEY_REVOKED, SESSION_EXPIRED, SESSION_REVOKED
from api.sessions import revoke_sessions, sessions_after
from engine import clock
from engine.errors import InvalidRequest, NotFound
from engine.money.accounts import create_account, issue_api_key, key_hash, revoke_api_key
from engine.runtime import Runtime
from tests.helpers import eventually
from tests.integration.test_realtime_sockets import (
    Json,
    Server,
    funded_owner,
    one_execution,
    pairs,
    serve,
    subscriber,
)

pytestmark = pytest.mark.anyio


async def sse_until_closed(
    base_url: str, headers: dict[str, str], first: anyio.Event | None = None
) -> list[Json]:
    """Every message of ``GET /v1/executions/stream`` until the server ends the stream; ``first``
    is set once the first message has arrived."""
    out: list[Json] = []
    fields: dict[str, str] = {}
    with anyio.fail_after(30):
        async with (
            httpx.AsyncClient(base_url=base_url, timeout=30) as http,
            http.stream("GET", "/v1/executions/stream", headers=headers) as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    continue
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                out.append(orjson.loads(fields["data"]))
                fields = {}
                if first is not None:
                    first.set()
    return out


async def joined(one: Server, two: Server, owner: str) -> int:
    """The subscriptions the two servers' hubs hold on ``owner``'s feed."""
    return one.subscribers(owner) + two.subscribers(owner)


async def test_a_websocket_is_closed_4401_when_its_token_expires(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, _ = await funded_owner(runtime)
    token = mint_session_token(runtime, owner, ttl_s=600)
    long_lived = mint_session_token(runtime, owner, ttl_s=3_600)
    async with serve(runtime) as server:
        server.hub.sweep_s = 0.02
        async with (
            subscriber(server.ws_url(token)) as short,
            subscriber(server.ws_url(long_lived)) as long,
        ):
            assert (await short.receive())["type"] == "reset"
            assert (await long.receive())["type"] == "reset"
            expected = await one_execution(runtime, owner)
            assert pairs(await short.take_events(9)) == expected
            # Twenty minutes later, for the hub: the ten-minute token has expired.
            real = clock.now_ms
            monkeypatch.setattr(clock, "now_ms", lambda: real() + 1_200_000)
            seen, closed = await short.events_until_closed()
            assert seen == []
            assert closed.rcvd is not None
            assert (closed.rcvd.code, closed.rcvd.reason) == (4401, SESSION_EXPIRED)
            # The one-hour token's connection lives on.
            later = await one_execution(runtime, owner)
            assert pairs(await long.take_events(18)) == expected + later
            assert server.subscribers(owner) == 1


async def test_revoking_an_accounts_sessions_closes_its_streams_in_every_api_process(
    runtime: Runtime,
) -> None:
    account, api_key = await create_account(runtime, name="revoked", coins_micro=10**12)
    owner = account.account_id
    other, other_token = await funded_owner(runtime)
    token = mint_session_token(runtime, owner)
    async with serve(runtime) as one, serve(runtime) as two:
        async with (
            subscriber(one.ws_url(token)) as first,
            subscriber(two.ws_url(token)) as second,
            subscriber(two.ws_url(other_token)) as bystander,
        ):
            for client in (first, second, bystander):
                assert (await client.receive())["type"] == "reset"
            sse_base = f"http://127.0.0.1:{one.port}"
            session_sse = {"Accept": "text/event-stream", "Authorization": f"Bearer {token}"}
            sse_seen: list[list[Json]] = []
            sse_reset = anyio.Event()

            async def read_sse() -> None:
                sse_seen.append(await sse_until_closed(sse_base, session_sse, sse_reset))

            async with anyio.create_task_group() as tg:
                tg.start_soon(read_sse)
                # The SSE stream has joined once its client holds the reset (the hub takes the
                # subscription before the snapshot is written: revoked in between, the stream
                # rightly closes before any reset) and the hub three subscriptions of the owner.
                with anyio.fail_after(30):
                    await sse_reset.wait()
                await eventually(lambda: joined(one, two, owner), until=lambda n: n == 3)
                await revoke_sessions(runtime, owner)
            for client in (first, second):
                _, closed = await client.events_until_closed()
                assert closed.rcvd is not None
                assert (closed.rcvd.code, closed.rcvd.reason) == (4401, SESSION_REVOKED)
            [messages] = sse_seen
            assert messages[0]["type"] == "reset"
            assert messages[-1] == {"type": "closed", "reason": SESSION_REVOKED}
            # Another account's stream is untouched.
            theirs = await one_execution(runtime, other)
            assert pairs(await bystander.take_events(9)) == theirs

        # The revoked token is refused everywhere; a token minted afterwards works.
        async with subscriber(one.ws_url(token)) as again:
            with pytest.raises(ConnectionClosed) as refused:
                await again.receive()
        assert refused.value.rcvd is not None
        assert refused.value.rcvd.code == 4401
        fresh = mint_session_token(runtime, owner)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{two.port}") as http:
            old = await http.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
            assert old.status_code == 401
            new = await http.get("/v1/me", headers={"Authorization": f"Bearer {fresh}"})
            assert new.status_code == 200
            # API keys are not sessions: they keep working.
            keyed = await http.get("/v1/me", headers={"Authorization": f"Bearer {api_key}"})
            assert keyed.status_code == 200
        async with subscriber(one.ws_url(fresh)) as renewed:
            assert (await renewed.receive())["type"] == "reset"
            mine = await one_execution(runtime, owner)
            assert pairs(await renewed.take_events(9)) == mine


async def test_a_revocation_made_before_a_subscription_refuses_it(runtime: Runtime) -> None:
    owner, token = await funded_owner(runtime)
    await runtime.redis.hset(runtime.store.keys.account(owner), "name", "r")
    after = await revoke_sessions(runtime, owner)
    assert await sessions_after(runtime, owner) == after
    async with serve(runtime) as server, subscriber(server.ws_url(token)) as client:
        with pytest.raises(ConnectionClosed) as refused:
            await client.receive()
    assert refused.value.rcvd is not None
    assert (refused.value.rcvd.code, refused.value.rcvd.reason) == (4401, SESSION_REVOKED)


async def test_revoking_an_account_that_does_not_exist_is_not_found(runtime: Runtime) -> None:
    with pytest.raises(NotFound):
        await revoke_sessions(runtime, "acc_doesnotexist")


async def test_token_lifetime_is_capped_when_minted_and_when_verified(runtime: Runtime) -> None:
    capped = await Runtime.open(replace(runtime.settings, session_max_ttl_s=3_600), runtime.redis)
    owner, _ = await funded_owner(capped)
    with pytest.raises(InvalidRequest, match="at most 3600 s"):
        mint_session_token(capped, owner, ttl_s=3_601)
    ok = mint_session_token(capped, owner, ttl_s=3_600)
    # A token signed with the deployment's secret but for longer than the cap is refused.
    now = clock.now_ms() // 1000
    key = capped.jwt_keys.current
    too_long = jwt.encode(
        {"sub": owner, "iat": now, "exp": now + 7_200, "aud": AUDIENCE, "iss": ISSUER},
        key.secret,
        algorithm="HS256",
        headers={"kid": key.kid},
    )
    async with serve(capped) as server:
        async with subscriber(server.ws_url(too_long)) as refused_client:
            with pytest.raises(ConnectionClosed) as refused:
                await refused_client.receive()
        assert refused.value.rcvd is not None
        assert refused.value.rcvd.code == 4401
        async with subscriber(server.ws_url(ok)) as client:
            assert (await client.receive())["type"] == "reset"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            answer = await http.get("/v1/me", headers={"Authorization": f"Bearer {too_long}"})
            assert answer.status_code == 401


async def test_revoking_an_api_key_closes_the_streams_it_opened_in_every_api_process(
    runtime: Runtime,
) -> None:
    account, revoked_key = await create_account(runtime, name="keyed", coins_micro=10**12)
    owner = account.account_id
    kept_key = await issue_api_key(runtime, owner)
    async with serve(runtime) as one, serve(runtime) as two:
        streams = {
            "revoked@one": (one, revoked_key),
            "revoked@two": (two, revoked_key),
            "kept@one": (one, kept_key),
        }
        seen: dict[str, list[Json]] = {}
        started = {name: anyio.Event() for name in streams}
        ended = {name: anyio.Event() for name in streams}

        async def read(name: str) -> None:
            server, key = streams[name]
            headers = {"Accept": "text/event-stream", "Authorization": f"Bearer {key}"}
            seen[name] = await sse_until_closed(
                f"http://127.0.0.1:{server.port}", headers, started[name]
            )
            ended[name].set()

        async with anyio.create_task_group() as tg:
            for name in streams:
                tg.start_soon(read, name)
            with anyio.fail_after(30):
                for event in started.values():
                    await event.wait()
            await eventually(lambda: joined(one, two, owner), until=lambda n: n == 3)
            await revoke_api_key(runtime, revoked_key)
            # Both streams of the revoked key end, in both processes; the other key's stays.
            with anyio.fail_after(30):
                await ended["revoked@one"].wait()
                await ended["revoked@two"].wait()
            assert await joined(one, two, owner) == 1
            assert seen["revoked@one"][-1] == {"type": "closed", "reason": KEY_REVOKED}
            assert seen["revoked@two"][-1] == {"type": "closed", "reason": KEY_REVOKED}
            assert "kept@one" not in seen
            tg.cancel_scope.cancel()

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{one.port}") as http:
            refused = await http.get("/v1/me", headers={"Authorization": f"Bearer {revoked_key}"})
            assert refused.status_code == 401


async def test_a_stream_whose_key_is_revoked_as_it_joins_is_closed(runtime: Runtime) -> None:
    """A key revoked between the request's authentication and the stream's join: the hub sees
    it gone once the subscription has joined, as no revocation entry will reach it."""
    account, api_key = await create_account(runtime, name="raced", coins_micro=10**12)
    await revoke_api_key(runtime, api_key)
    async with serve(runtime) as server:
        sub = await server.hub.open(account.account_id, None, key_hash=key_hash(api_key))
        assert sub.closed
        assert sub.reason == KEY_REVOKED
