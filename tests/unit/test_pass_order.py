"""projections.projector.PassOrder: the order in which a projector's pass folds its partitions,
and rest_after: how long the projector rests between passes, without Redis (the lanes that follow
them: tests/integration/test_projector_lanes.py)."""

from __future__ import annotations

from projections.projector import _IDLE_MAX_S, _IDLE_MIN_S, PassOrder, rest_after

FULL = 4
LONG = 3600.0  # a budget the test never reaches


def drain(order: PassOrder, entries: dict[int, list[int]]) -> list[int]:
    """Fold with one lane, partition ``p``'s batches taking ``entries[p]`` in turn (then none)."""
    folded: list[int] = []
    while (p := order.next()) is not None:
        folded.append(p)
        order.folded(p, entries[p].pop(0) if entries[p] else 0)
    return folded


def test_without_a_backlog_each_partition_is_folded_once() -> None:
    assert drain(PassOrder([1, 2, 3], FULL, LONG), {1: [2], 2: [0], 3: [3]}) == [1, 2, 3]


def test_a_backlog_goes_round_with_those_that_had_entries_and_the_empty_rest() -> None:
    # 1 has a trickle, 2 nothing, 3 a backlog of three batches.
    order = PassOrder([1, 2, 3], FULL, LONG)
    assert drain(order, {1: [1, 1, 1], 2: [], 3: [4, 4, 2]}) == [1, 2, 3, 1, 3, 1, 3, 1]


def test_a_partition_folded_before_the_first_backlog_goes_round_once_one_shows() -> None:
    # 1 had entries before 2's backlog showed; it goes round while the backlog lasts, and once
    # more after (its entries came while 2 still had one), then finds nothing and rests.
    order = PassOrder([1, 2], FULL, LONG)
    assert drain(order, {1: [2, 3], 2: [4, 1]}) == [1, 2, 1, 2, 1]


def test_past_its_budget_a_pass_folds_each_partition_once() -> None:
    assert drain(PassOrder([1, 2], FULL, 0.0), {1: [4, 4], 2: [4]}) == [1, 2]


def test_a_pass_is_behind_while_a_partition_s_last_batch_was_full() -> None:
    order = PassOrder([1, 2], FULL, LONG)
    order.folded(1, FULL)
    assert order.behind
    order.folded(2, 1)
    assert order.behind  # 1 still has more
    order.folded(1, 2)
    assert not order.behind


def test_a_backlog_goes_on_at_once_a_trickle_rests_a_moment_nothing_rests_longer() -> None:
    assert rest_after(worked=True, behind=True, idle=0.04) == (0.0, _IDLE_MIN_S)
    # Caught up: polling every partition again at once would spin on one entry a pass.
    assert rest_after(worked=True, behind=False, idle=0.04) == (_IDLE_MIN_S, _IDLE_MIN_S)
    rests, idle = [], _IDLE_MIN_S
    for _ in range(7):
        rest, idle = rest_after(worked=False, behind=False, idle=idle)
        rests.append(rest)
    assert rests == [min(_IDLE_MIN_S * 2**i, _IDLE_MAX_S) for i in range(7)]
