"""Small builders the store contract tests share: owners in chosen partitions, funded accounts and
requests. Kept apart from the test modules so the cluster suite can import those unchanged."""

from __future__ import annotations

from engine.log.events import (
    ExecutionRequested,
    StepSpec,
    Target,
    WorkflowSnapshot,
)
from engine.log.ids import new_execution_id, new_id
from engine.log.store import EventStore

FEE = 10_000  # 0.01 coin, the default flat fee


def owner_in(store: EventStore, partition: int) -> str:
    """A fresh account id that routes to ``partition`` (ids are random: draw until one does)."""
    while True:
        owner = new_id("acc")
        if store.keys.partition(owner) == partition:
            return owner


async def funded(store: EventStore, micro: int, partition: int | None = None) -> str:
    """A fresh account holding ``micro`` micro-coins, in ``partition`` when one is given."""
    owner = new_id("acc") if partition is None else owner_in(store, partition)
    await store.redis.set(store.keys.balance(owner), micro)
    return owner


async def balance(store: EventStore, owner: str) -> int:
    """The owner's balance as stored (0 when the key is missing)."""
    return int(await store.redis.get(store.keys.balance(owner)) or 0)


def requested(store: EventStore, owner: str, fee: int = FEE) -> ExecutionRequested:
    """An ``ExecutionRequested`` for a one-step transcript of a fresh item, not yet stamped."""
    return ExecutionRequested(
        execution_id=new_execution_id(store.keys.partition(owner)),
        owner=owner,
        kind="transcript",
        target=Target(kind="youtube_video", item_id=new_id("itm")),
        workflow=WorkflowSnapshot(
            workflow_id=None,
            name="transcript",
            target_kind="youtube_video",
            steps=[StepSpec(step_id=new_id("stp"), tool_id="transcribe")],
        ),
        step_inputs=[{"lang": "en"}],
        fee=fee,
        request_id=new_id("req"),
    )


async def started_execution(store: EventStore, partition: int | None = None) -> ExecutionRequested:
    """A funded owner's execution, accepted (seq 1 in its stream and in the partition log)."""
    owner = await funded(store, FEE, partition)
    req = requested(store, owner)
    await store.admission.request(req)
    return req
