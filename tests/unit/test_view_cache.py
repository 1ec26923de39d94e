"""projections.view_cache: what a projector keeps of the views it committed."""

from __future__ import annotations

import msgspec

from projections.fold import fold
from projections.view_cache import ViewCache
from projections.views import ExecutionView
from tests.golden import scenarios


def _view(n: int, status: str = "running") -> ExecutionView:
    view = fold(scenarios.transcript_done(f"exe_{n:04d}", "acc_a"))
    assert view is not None
    return msgspec.structs.replace(view, status=status)


def test_kept_views_come_back_under_their_partition_only() -> None:
    cache = ViewCache(10)
    a, b = _view(1), _view(2)
    cache.keep(3, [a, b])
    assert cache.take(3, ["exe_0001", "exe_0002", "exe_0009"]) == {"exe_0001": a, "exe_0002": b}
    assert cache.take(4, ["exe_0001"]) == {}


def test_ended_views_are_not_kept_and_drop_what_was() -> None:
    cache = ViewCache(10)
    cache.keep(0, [_view(1), _view(2, "pending")])
    cache.keep(0, [_view(1, "done"), _view(3, "error")])
    assert list(cache.take(0, ["exe_0001", "exe_0002", "exe_0003"])) == ["exe_0002"]
    assert len(cache) == 1


def test_the_least_recently_used_go_beyond_the_capacity() -> None:
    cache = ViewCache(2)
    cache.keep(0, [_view(1), _view(2)])
    cache.take(0, ["exe_0001"])  # now more recent than 2
    cache.keep(0, [_view(3)])
    assert sorted(cache.take(0, ["exe_0001", "exe_0002", "exe_0003"])) == ["exe_0001", "exe_0003"]


def test_a_capacity_of_zero_keeps_nothing() -> None:
    cache = ViewCache(0)
    cache.keep(0, [_view(1)])
    assert len(cache) == 0


def test_forgetting_a_partition_leaves_the_others() -> None:
    cache = ViewCache(10)
    cache.keep(0, [_view(1)])
    cache.keep(1, [_view(2)])
    cache.forget(0)
    assert cache.take(0, ["exe_0001"]) == {}
    assert list(cache.take(1, ["exe_0002"])) == ["exe_0002"]
    cache.clear()
    assert len(cache) == 0
