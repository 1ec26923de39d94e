"""What one ``POST /v1/items/{id}/transcript`` costs the API process, apart from the box's load:
Redis round trips and commands, Python function calls and CPU per request, in process on the
embedded store.

    python -m bench.request_cost [--requests N]

The app answers through httpx's ASGI transport (no sockets, no uvicorn), one request at a time,
after a warm-up; commands and round trips (a pipeline is one) are counted at the client, calls
by cProfile (whose overhead is in the
CPU figure, and so is the embedded store's own work, scripts included). Counts are exact and
repeatable; the CPU time moves with the box and is only for comparing two builds side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
from collections import Counter
from dataclasses import replace
from typing import Any

import httpx
from redis.asyncio.client import Pipeline

from api.app import create_app
from engine.connection import embedded
from engine.money import accounts
from engine.resources import items
from engine.runtime import Runtime
from engine.settings import Rate, RateLimits, Settings

WARM_UP = 20


async def measure(requests: int) -> str:
    """One line: round trips, commands (by name), function calls and CPU ms per request."""
    redis = embedded()
    wide = Rate(10**9, 60)
    settings = replace(Settings(), rate_limits=RateLimits(key=wide, ip=wide, auth_failures=wide))
    runtime = await Runtime.open(settings, redis)
    account, api_key = await accounts.create_account(runtime, name="cost", coins_micro=10**15)
    item = await items.create_item(runtime, account.account_id, "https://youtu.be/dQw4w9WgXcQ")
    counts: Counter[str] = Counter()
    trips = 0
    client_class: Any = type(redis)
    execute = client_class.execute_command
    queue, flush = Pipeline.execute_command, Pipeline.execute

    async def counting(self: Any, *args: Any, **options: Any) -> Any:
        nonlocal trips
        counts[str(args[0]).upper()] += 1
        trips += 1
        return await execute(self, *args, **options)

    def queueing(self: Any, *args: Any, **options: Any) -> Any:
        counts[str(args[0]).upper()] += 1
        return queue(self, *args, **options)

    async def flushing(self: Any, *args: Any, **options: Any) -> Any:
        nonlocal trips
        trips += 1
        return await flush(self, *args, **options)

    transport = httpx.ASGITransport(app=create_app(runtime), client=("203.0.113.9", 40_000))
    path = f"/v1/items/{item.item_id}/transcript"
    headers = {"Authorization": f"Bearer {api_key}"}
    profile = cProfile.Profile()
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:
        for _ in range(WARM_UP):
            (await http.post(path, headers=headers)).raise_for_status()
        client_class.execute_command = counting
        Pipeline.execute_command, Pipeline.execute = queueing, flushing  # type: ignore[method-assign]
        started = time.process_time()
        profile.enable()
        try:
            for _ in range(requests):
                response = await http.post(path, headers=headers)
                if response.status_code != 202:
                    raise RuntimeError(f"expected 202, got {response.status_code}: {response.text}")
        finally:
            profile.disable()
            client_class.execute_command = execute
            Pipeline.execute_command, Pipeline.execute = queue, flush  # type: ignore[method-assign]
        cpu_s = time.process_time() - started
    calls: int = pstats.Stats(profile).total_calls  # type: ignore[attr-defined]
    by_name = ", ".join(f"{name} {n / requests:g}" for name, n in sorted(counts.items()))
    return (
        f"per request: {trips / requests:g} Redis round trips, "
        f"{sum(counts.values()) / requests:g} commands ({by_name}), "
        f"{calls / requests:,.0f} Python function calls, {cpu_s / requests * 1000:.2f} ms CPU "
        "(under cProfile, the embedded store's work included)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=300, help="requests measured")
    args = parser.parse_args()
    print(asyncio.run(measure(args.requests)))


if __name__ == "__main__":
    main()
