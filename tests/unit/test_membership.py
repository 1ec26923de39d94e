"""The projectors' shares of the partitions (projections.membership.share), pure."""

from __future__ import annotations

import pytest

from projections.membership import share


@pytest.mark.parametrize("n", [1, 2, 3, 5, 16, 17])
@pytest.mark.parametrize("partitions", [1, 4, 16, 33])
def test_shares_cover_every_partition_once_and_differ_by_one_at_most(
    n: int, partitions: int
) -> None:
    members = [f"prj_{i:02d}" for i in range(n)]
    shares = [share(range(partitions), members, m) for m in members]
    flat = sorted(p for s in shares for p in s)
    assert flat == list(range(partitions))
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1


def test_a_projector_not_yet_listed_counts_itself_in() -> None:
    assert share(range(4), ["prj_a"], "prj_b") == [1, 3]
    assert share(range(4), [], "prj_a") == [0, 1, 2, 3]
