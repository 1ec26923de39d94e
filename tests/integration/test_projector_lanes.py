"""A projector folds several partitions at once (``CLIPSTREAM_PROJECTOR_LANES``), on both
backends: a batch held up on its round trips does not hold up the other partitions, and a lane's
failure is the projector's plain error (retried like any other), never a group of them."""

from __future__ import annotations

from dataclasses import replace

import anyio
import pytest

from engine.errors import StoreUnavailable
from engine.log.entries import Entry
from engine.log.ids import new_id
from engine.runtime import Runtime
from engine.settings import Settings
from projections import projector as projector_module
from projections.namespace import Namespace
from projections.projector import BatchWrite, Projector
from tests.chaos.test_projector_faults import _assert_complete_and_identical, _fill
from tests.golden import scenarios
from tests.integration.test_projector import Made, make

pytestmark = pytest.mark.anyio

# A hang guard only: with one lane the held-up batch waits forever, and the verdict is that
# the pass cannot finish, not how long it took.
HANG_S = 30


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, projector_lanes=2)


async def _busy(runtime: Runtime) -> list[int]:
    """The partitions whose logs hold entries."""
    return [p for p in runtime.store.partitions if await runtime.store.log.log_length(p)]


class HeldUp(Projector):
    """Its first commit waits until every other partition's batch has been committed."""

    def __init__(self, runtime: Runtime, partitions: list[int]) -> None:
        super().__init__(runtime, partitions=partitions)
        self.committed: list[int] = []
        self.first: int | None = None
        self.others_done = anyio.Event()

    async def _write(self, ns: Namespace, write: BatchWrite) -> None:
        if self.first is None:
            self.first = ns.partition
            await self.others_done.wait()
        await super()._write(ns, write)
        self.committed.append(ns.partition)
        if len(self.committed) == len(self.partitions) - 1 and self.first not in self.committed:
            self.others_done.set()


async def test_a_held_up_batch_does_not_hold_up_the_other_partitions(runtime: Runtime) -> None:
    await _fill(runtime, owners=8)
    busy = await _busy(runtime)
    assert len(busy) >= 2
    projector = HeldUp(runtime, busy)
    with anyio.fail_after(HANG_S):
        await projector.pass_once(acquire=True)
    # One pass: every other partition's batch was committed while the first one waited.
    assert sorted(projector.committed) == sorted(busy)
    assert projector.committed[-1] == projector.first
    await projector.run_until_idle()
    await _assert_complete_and_identical(runtime)


async def test_a_failing_lane_raises_its_own_error_and_the_others_keep_their_work(
    runtime: Runtime,
) -> None:
    await _fill(runtime, owners=3)
    busy = await _busy(runtime)
    broken = busy[0]
    real_read = runtime.store.log.read_log
    failing = True

    async def read_log(partition: int, after: str, count: int) -> list[Entry]:
        if partition == broken and failing:
            raise StoreUnavailable("the partition's read failed")
        return await real_read(partition, after, count)

    runtime.store.log.read_log = read_log  # type: ignore[method-assign]
    projector = Projector(runtime, partitions=busy)
    with pytest.raises(StoreUnavailable, match="the partition's read failed"):
        await projector.pass_once(acquire=True)
    # Whatever the other lane committed before it stopped stays; the rest folds once the store
    # answers again.
    failing = False
    await projector.run_until_idle()
    await _assert_complete_and_identical(runtime)


class Recording(Projector):
    """Records the partition of every batch it commits, in order."""

    def __init__(self, runtime: Runtime, partitions: list[int]) -> None:
        super().__init__(runtime, partitions=partitions)
        self.committed: list[int] = []

    async def _write(self, ns: Namespace, write: BatchWrite) -> None:
        await super()._write(ns, write)
        self.committed.append(ns.partition)


async def _one_pass(
    runtime: Runtime, budget_s: float, monkeypatch: pytest.MonkeyPatch
) -> Recording:
    """One pass of a one-lane projector over the busy partitions, batches of 4 entries, going
    on with backlogs for ``budget_s``."""
    monkeypatch.setattr(projector_module, "_pass_budget_s", lambda lease_ms: budget_s)
    runtime.settings = replace(runtime.settings, projector_lanes=1, batch=4)
    projector = Recording(runtime, await _busy(runtime))
    await projector.pass_once(acquire=True)
    return projector


async def test_a_pass_goes_on_with_the_backlogs_round_robin(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(runtime, owners=4)
    busy = await _busy(runtime)
    lengths = {p: await runtime.store.log.log_length(p) for p in busy}
    assert max(lengths.values()) > 4  # some partition has more than one batch
    projector = await _one_pass(runtime, 3600.0, monkeypatch)
    # The whole backlog in one pass: a partition's batches as its length asks ...
    assert {p: projector.committed.count(p) for p in busy} == {
        p: -(-n // 4) for p, n in lengths.items()
    }
    # ... and every partition's first batch before any partition's second.
    assert sorted(projector.committed[: len(busy)]) == sorted(busy)
    await _assert_complete_and_identical(runtime)


async def test_a_pass_past_its_budget_folds_each_partition_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _fill(runtime, owners=4)
    busy = await _busy(runtime)
    projector = await _one_pass(runtime, 0.0, monkeypatch)
    assert sorted(projector.committed) == sorted(busy)


def test_a_pass_budget_is_half_the_time_between_two_looks_at_the_leases() -> None:
    assert projector_module._pass_budget_s(300) == pytest.approx(0.05)
    assert projector_module._pass_budget_s(15_000) == 0.5  # looks at most a second apart


async def test_a_partition_with_new_entries_waits_one_round_behind_a_backlog(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries that reach a quiet partition while another's backlog is folded are folded in the
    same pass, a round later, not after the backlog."""
    backlog_owner, quiet_owner = new_id("acc"), new_id("acc")
    keys = runtime.store.keys
    while keys.partition(quiet_owner) == keys.partition(backlog_owner):
        quiet_owner = new_id("acc")
    for scenario in scenarios.SCENARIOS.values():
        await make(runtime.store, backlog_owner, scenario)
    await make(runtime.store, quiet_owner, scenarios.transcript_done, upto=2)  # under a batch
    backlog, quiet = keys.partition(backlog_owner), keys.partition(quiet_owner)

    class Arriving(Recording):
        """The quiet partition gets a new execution once its own batch and one of the backlog's
        are in."""

        late: Made | None = None

        async def _write(self, ns: Namespace, write: BatchWrite) -> None:
            await super()._write(ns, write)
            if self.late is None and quiet in self.committed and ns.partition == backlog:
                self.late = await make(runtime.store, quiet_owner, scenarios.transcript_done)

    monkeypatch.setattr(projector_module, "_pass_budget_s", lambda lease_ms: 3600.0)
    runtime.settings = replace(runtime.settings, projector_lanes=1, batch=4)
    projector = Arriving(runtime, [backlog, quiet])
    await projector.pass_once(acquire=True)
    # Both partitions at their log's tail after one pass, the late execution's view written.
    for p in (backlog, quiet):
        assert not await runtime.store.log.read_log(p, projector._held[p], 1)
    assert projector.late is not None
    ns = Namespace(keys, quiet, projector.version)
    assert await runtime.redis.exists(ns.view(projector.late.execution_id))
    # The late batches came round robin, before the backlog's last.
    assert projector.committed[-1] == backlog
