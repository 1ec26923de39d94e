"""What read-your-writes costs the execution lists: ``GET /v1/executions/me`` with the projector
current, then with N of the owner's requests past its checkpoint (accepted, not folded yet), which
the query finds in the partition log and folds from their streams (projections.queries).

    python -m bench.list_merge [--redis-url redis://127.0.0.1:PORT/0] [--backlog 10,100,1000]
                               [--folded 50] [--gets 200] [--others 2000]

In process: the app answers through httpx's ASGI transport (no sockets, no uvicorn), on the embedded
store or, with ``--redis-url``, a real Redis (give it a private, empty server: the bench writes an
account and its executions and deletes nothing). The owner first has ``--folded`` executions the
projector has folded; each backlog size then adds requests (transcripts with supplied text, never
run) up to that many past the checkpoint, and ``--gets`` GETs of the first page (limit 20) are timed
one at a time, after a warm-up. Last, the projector catches up and the list is timed again, and once
more with ``--others`` requests of another owner of the same partition past the checkpoint (scanned
past, not folded). The execution streams folded per GET are counted (exact: the owner's unfolded
requests, at most ``UNFOLDED_KEPT + 1``); the times move with the box's load and are for comparing
the rows of one sitting.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import time
from dataclasses import replace
from typing import Any

import httpx

from api.app import create_app
from engine.connection import connect
from engine.money import accounts
from engine.resources import items
from engine.runtime import Runtime
from engine.settings import Rate, RateLimits, Settings
from projections.projector import Projector

WARM_UP = 10
PAGE = {"limit": "20"}


class Folds:
    """Counts the execution streams the lists fold (the histories the queries read) while on."""

    def __init__(self, runtime: Runtime) -> None:
        self.log = runtime.store.log
        self.read = self.log.histories
        self.streams = 0

    def __enter__(self) -> Folds:
        read = self.read

        async def counting(execution_ids: Any, *args: Any, **options: Any) -> Any:
            found = await read(execution_ids, *args, **options)
            self.streams += len(found)
            return found

        self.log.histories = counting  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self.log.histories  # the class's method again


async def _timed(http: httpx.AsyncClient, headers: dict[str, str], gets: int) -> list[float]:
    """The wall time of ``gets`` GETs of the first page, in ms, one at a time."""
    for _ in range(WARM_UP):
        (await http.get("/v1/executions/me", params=PAGE, headers=headers)).raise_for_status()
    times = []
    for _ in range(gets):
        started = time.perf_counter()
        response = await http.get("/v1/executions/me", params=PAGE, headers=headers)
        times.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
    return times


def _row(label: str, times: list[float], streams: int, gets: int) -> str:
    p90 = statistics.quantiles(times, n=10)[-1]
    return f"| {label} | {statistics.median(times):.2f} | {p90:.2f} | {streams / gets:g} |"


async def measure(
    redis_url: str | None, backlogs: list[int], folded: int, gets: int, others: int
) -> list[str]:
    """The table's lines: one row per state of the projector."""
    wide = Rate(10**9, 60)
    limits = RateLimits(key=wide, ip=wide, auth_failures=wide)
    settings = replace(Settings(), rate_limits=limits, redis_url=redis_url)
    redis = connect(settings)  # the embedded store when there is no URL
    runtime = await Runtime.open(settings, redis)
    account, api_key = await accounts.create_account(runtime, name="lists", coins_micro=10**15)
    item = await items.create_item(runtime, account.account_id, "https://youtu.be/dQw4w9WgXcQ")
    headers = {"Authorization": f"Bearer {api_key}"}
    transport = httpx.ASGITransport(app=create_app(runtime), client=("203.0.113.9", 40_000))
    lines = [
        "| state | median ms | p90 ms | streams folded per GET |",
        "|---|---|---|---|",
    ]
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as http:

        async def request(
            n: int, who: tuple[str, dict[str, str]] = (item.item_id, headers)
        ) -> None:
            for _ in range(n):
                answer = await http.post(
                    f"/v1/items/{who[0]}/transcript",
                    json={"text": "Hello there. A short transcript."},
                    headers=who[1],
                )
                if answer.status_code != 202:
                    raise RuntimeError(f"expected 202, got {answer.status_code}: {answer.text}")

        async def row(label: str) -> str:
            with Folds(runtime) as folds:
                times = await _timed(http, headers, gets)
            return _row(label, times, folds.streams, gets + WARM_UP)

        await request(folded)
        await Projector(runtime).run_until_idle()
        lines.append(await row(f"projector current ({folded} folded)"))
        behind = 0
        for backlog in sorted(backlogs):
            await request(backlog - behind)
            behind = backlog
            lines.append(await row(f"{backlog} requests past the checkpoint"))
        await Projector(runtime).run_until_idle()
        lines.append(await row(f"projector caught up ({folded + behind} folded)"))
        if others:
            # Another owner of the same partition: its requests are scanned past, not folded.
            neighbour = await _neighbour(runtime, account.account_id)
            await request(others, neighbour)
            lines.append(await row(f"{others} of another owner's requests past the checkpoint"))
    await runtime.close()
    return lines


async def _neighbour(runtime: Runtime, owner: str) -> tuple[str, dict[str, str]]:
    """An item and the auth header of a new account in ``owner``'s partition."""
    keys = runtime.store.keys
    for n in range(20 * keys.partitions):
        account, api_key = await accounts.create_account(
            runtime, name=f"neighbour {n}", coins_micro=10**15
        )
        if keys.partition(account.account_id) == keys.partition(owner):
            item = await items.create_item(
                runtime, account.account_id, "https://youtu.be/dQw4w9WgXcQ"
            )
            return item.item_id, {"Authorization": f"Bearer {api_key}"}
    raise RuntimeError("no account fell in the owner's partition")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--redis-url", default=None, help="a private, empty Redis (default: embedded)"
    )
    parser.add_argument("--backlog", default="10,100,1000", help="requests past the checkpoint")
    parser.add_argument("--folded", type=int, default=50, help="executions folded first")
    parser.add_argument("--gets", type=int, default=200, help="GETs timed per row")
    parser.add_argument(
        "--others", type=int, default=2000, help="another owner's requests past the checkpoint"
    )
    args = parser.parse_args()
    backlogs = [int(n) for n in args.backlog.split(",") if n]
    store = "embedded store" if args.redis_url is None else "Redis"
    python = platform.python_version()
    print(f"GET /v1/executions/me?limit=20, {store}, {platform.node()}, python {python}")
    for line in asyncio.run(measure(args.redis_url, backlogs, args.folded, args.gets, args.others)):
        print(line)


if __name__ == "__main__":
    main()
