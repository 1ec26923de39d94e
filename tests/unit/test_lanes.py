"""engine.run.lanes.OwnerQueue: the jobs waiting for a lane, served round-robin by owner."""

from __future__ import annotations

from engine.run.job import Job
from engine.run.lanes import OwnerQueue


def job(owner: str, n: int) -> Job:
    return Job(execution_id=f"{owner}-{n}", owner=owner, partition=0, entry_id=f"{n}-0", epoch=1)


def drain(queue: OwnerQueue) -> list[str]:
    taken = []
    while (next_job := queue.take()) is not None:
        taken.append(next_job.execution_id)
    return taken


def test_owners_take_turns_whatever_their_backlog() -> None:
    queue = OwnerQueue()
    for n in range(3):
        queue.put(job("a", n))
    queue.put(job("b", 0))
    queue.put(job("c", 0))
    queue.put(job("b", 1))
    assert drain(queue) == ["a-0", "b-0", "c-0", "a-1", "b-1", "a-2"]


def test_an_owner_that_comes_back_queues_at_the_end_of_the_turn() -> None:
    queue = OwnerQueue()
    queue.put(job("a", 0))
    queue.put(job("b", 0))
    first = queue.take()
    assert first is not None
    assert first.owner == "a"
    queue.put(job("a", 1))
    assert drain(queue) == ["b-0", "a-1"]


def test_a_job_lost_while_waiting_is_skipped() -> None:
    queue = OwnerQueue()
    lost = job("a", 0)
    queue.put(lost)
    queue.put(job("a", 1))
    queue.put(job("b", 0))
    lost.lose()
    # The lost job took its owner's turn: the other owner goes first.
    assert drain(queue) == ["b-0", "a-1"]


def test_an_empty_or_cleared_queue_has_nothing() -> None:
    queue = OwnerQueue()
    assert queue.take() is None
    queue.put(job("a", 0))
    queue.clear()
    assert queue.take() is None
