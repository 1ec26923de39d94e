"""Load for the archive tests: real executions (requests through the engine's commands, driven by
a worker, folded by a projector) and archiving until the archive holds every log entry."""

from __future__ import annotations

from dataclasses import dataclass

from engine.archive import catalog
from engine.archive.archiver import Archiver
from engine.commands import request_transcript
from engine.log.events import AnyEvent
from engine.money.accounts import create_account
from engine.resources.items import create_item
from engine.run.worker import Worker
from engine.runtime import Runtime
from projections.projector import Projector
from tests.helpers import eventually


@dataclass
class Owner:
    account_id: str
    item_id: str


async def owners(runtime: Runtime, n: int = 2, coins_micro: int = 100_000_000) -> list[Owner]:
    out = []
    for i in range(n):
        out.append(await _owner(runtime, i, coins_micro))
    return out


async def owners_in_every_partition(runtime: Runtime, per_partition: int) -> list[Owner]:
    """``per_partition`` owners in each partition. Account ids are random, so accounts are made
    until every partition has its share (the extras are left unused): a test that needs its load
    spread over partitions, or over a cluster's masters, gets it every time, not most times."""
    wanted = {p: per_partition for p in runtime.store.partitions}
    out: list[Owner] = []
    for i in range(200 * len(wanted) * per_partition):
        if not any(wanted.values()):
            return out
        owner = await _owner(runtime, i, 100_000_000)
        p = runtime.store.keys.partition(owner.account_id)
        if wanted[p]:
            wanted[p] -= 1
            out.append(owner)
    raise AssertionError(f"no owners found for partitions still wanting some: {wanted}")


async def _owner(runtime: Runtime, i: int, coins_micro: int) -> Owner:
    account, _ = await create_account(runtime, name=f"owner {i}", coins_micro=coins_micro)
    item = await create_item(runtime, account.account_id, f"https://youtu.be/video{i:06d}")
    return Owner(account.account_id, item.item_id)


async def transcripts(runtime: Runtime, who: list[Owner], per_owner: int) -> list[str]:
    """``per_owner`` transcript requests for each owner; their execution ids."""
    ids = []
    for n in range(per_owner):
        for owner in who:
            accepted = await request_transcript(
                runtime,
                owner.account_id,
                owner.item_id,
                lang="en",
                embed=False,
                text=None,
                request_id=f"req-{n}",
            )
            ids.append(accepted.execution_id)
    return ids


async def settle(runtime: Runtime) -> None:
    """Every execution run to its end and folded."""
    await Worker(runtime).run_until_idle()
    await Projector(runtime).run_until_idle()


async def log_ids(runtime: Runtime, partition: int) -> list[str]:
    rows = await runtime.redis.xrange(runtime.store.keys.log(partition), "-", "+")
    return [r[0].decode() for r in rows]


async def archive_everything(runtime: Runtime, archiver: Archiver) -> None:
    """Archiver passes until every partition's archive reaches its log's last entry."""
    assert runtime.archive is not None
    archive = runtime.archive
    store = runtime.store
    lasts = {}
    for p in store.partitions:
        last = await runtime.redis.xrevrange(store.keys.log(p), "+", "-", count=1)
        if last:  # an empty log has nothing left to archive
            lasts[p] = last[0][0].decode()

    async def done() -> bool:
        await archiver.pass_once()
        for p, last in lasts.items():
            if (await catalog.latest_manifest(archive, p)).position != last:
                return False
        return True

    await eventually(done)


async def histories_in_log(runtime: Runtime, execution_ids: list[str]) -> dict[str, list[AnyEvent]]:
    """Each execution's events as the partition logs hold them (hot tier only)."""
    wanted = set(execution_ids)
    out: dict[str, list[AnyEvent]] = {x: [] for x in execution_ids}
    for p in runtime.store.partitions:
        for entry in await runtime.store.log.read_log(p, "0-0", 100_000):
            if entry.event is not None and entry.event.execution_id in wanted:
                out[entry.event.execution_id].append(entry.event)
    return out
